# Shared by the load and instruction benchmarks: the app (nginx) and the gateway config.
# Sourced, not run.

# start_app DIR PORT: nginx, one worker, a fixed 19-byte body, and a 16 KiB HTML page at
# `*/page.html` (for the presence injection case); pid in DIR/nginx.pid.
start_app() {
  mkdir -p "$1/www/pres"
  chmod 755 "$1" "$1/www" "$1/www/pres"  # the nginx worker is not root
  { echo '<!doctype html><html><head><title>app page</title></head><body>'
    for i in $(seq 160); do printf '<p>line %03d of the app page, a paragraph of some text for size.</p>\n' "$i"; done | head -c 16000
    echo '</body></html>'; } > "$1/www/page.html"
  cp "$1/www/page.html" "$1/www/pres/page.html"
  cat > "$1/nginx.conf" <<NGX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$2;
    location ~ page\.html\$ { root $1/www; default_type text/html; }
    location / { default_type text/plain; return 200 "hello from the app\n"; }
  }
}
NGX
  nginx -c "$1/nginx.conf"
}

# start_nginx_proxy DIR PORT APP_PORT: nginx as the plain reverse proxy ops run today (one
# worker, keep-alive to the app); pid in DIR/nginx-proxy.pid.
start_nginx_proxy() {
  cat > "$1/nginx-proxy.conf" <<NGX
worker_processes 1;
pid $1/nginx-proxy.pid;
error_log $1/nginx-proxy.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
  nginx -c "$1/nginx-proxy.conf"
}

# gateway_conf DIR LISTEN_PORT ADMIN_PORT APP_PORT THREADS [WORK_STEALING]: writes DIR/gw.yaml with
# products: `bench` (100 seats, checks under /sdata/mobile) and `full` (its only grant has
# expired, so every check under /full/sdata/mobile fails, answered by the gateway alone), and
# `pres` (under /pres, with presence: its HTML pages of held sessions get the heartbeat script),
# and `line` (under /line, one seat and a waiting line: `fill_line` takes the seat and queues).
gateway_conf() {
  cat > "$1/gw.yaml" <<YAML
listen: 127.0.0.1:$2
admin: { listen: 127.0.0.1:$3 }
store: { kind: embedded, path: $1/seats.redb }
threads: $5
work_stealing: ${6:-false}
products:
  - name: bench
    upstream: 127.0.0.1:$4
    session: { cookie: SID, idle_timeout: 1h, max_lifetime: 12h, expired: adopt }
    login: { path: /login, user: { form_field: username } }
    seats: 100
    clients:
      - kind: mobile
        match: { path_prefix: /sdata/mobile }
        mode: check
        on_full: { status: 401, body: "the user name or password is invalid" }
      - kind: web
  - name: full
    upstream: 127.0.0.1:$4
    path_prefix: /full
    session: { cookie: FSID, idle_timeout: 1h, max_lifetime: 12h, expired: adopt }
    login: { path: /full/login, user: { form_field: username } }
    pools: [{ name: main, default: true, grants: [{ seats: 1, expires: "2020-01-01T00:00:00Z" }] }]
    clients:
      - kind: mobile
        match: { path_prefix: /full/sdata/mobile }
        mode: check
        on_full: { status: 401, body: "the user name or password is invalid" }
      - kind: web
  - name: pres
    upstream: 127.0.0.1:$4
    path_prefix: /pres
    session: { cookie: PSID, idle_timeout: 1h, max_lifetime: 12h, expired: adopt, presence_timeout: 90s }
    login: { path: /pres/login, user: { form_field: username } }
    seats: 100
  - name: line
    upstream: 127.0.0.1:$4
    path_prefix: /line
    session: { cookie: LSID, idle_timeout: 1h, max_lifetime: 12h, expired: adopt }
    login: { path: /line/login, method: POST, user: { form_field: username } }
    seats: 1
    queue: { enabled: true, abandon_after: 1h, max_wait: 24h, max_length: 100000 }
YAML
}

# fill_line PORT N FILE: takes `line`'s one seat (an adopted cookie) and queues N browser logins
# behind it, one ticket cookie value a line of FILE.
fill_line() {
  curl -s -o /dev/null -H 'Cookie: LSID=line-holder' "http://127.0.0.1:$1/line/"
  : >"$3"
  for i in $(seq "$2"); do
    curl -s -o /dev/null -D - -d "username=waiting-$i&password=x" "http://127.0.0.1:$1/line/login" |
      tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: seatgate_queue=\([^;]*\).*/\1/p' >>"$3"
  done
  [[ $(wc -l <"$3") == "$2" ]] || { echo "fill_line: $(wc -l <"$3") tickets of $2"; return 1; }
}
