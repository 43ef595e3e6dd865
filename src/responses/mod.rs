//! Every answer the gateway writes itself: denials per client kind, the expired-session
//! redirect, bad-request answers and built-in pages.
//!
//! `canned` is the answer type and the pool-full answers (rendered from config's typed
//! `OnFull` once per config snapshot and cloned per request: `Bytes` clones are reference
//! counts); `pages` holds the HTML templates; `answers` the fixed answers of the request path.
//! Every generated answer carries `Content-Length` and an explicit `Cache-Control: no-store`;
//! nothing internal (error text, store state) goes into a body.

mod answers;
mod canned;
mod pages;
mod render;

pub use answers::*;
pub use canned::{on_full, Canned, Denials};
pub use pages::{
    app_unreachable, escape_html, full_page, queue_csp, self_service_done, self_service_refused,
    waiting_page, InLine, Offer,
};
pub use render::*;
