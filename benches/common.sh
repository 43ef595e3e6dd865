# Shared by the load and instruction benchmarks: the app (nginx) and the gateway config.
# Sourced, not run.

# start_app DIR PORT: nginx, one worker, a fixed 19-byte body; pid in DIR/nginx.pid.
start_app() {
  cat > "$1/nginx.conf" <<NGX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$2;
    location / { default_type text/plain; return 200 "hello from the app\n"; }
  }
}
NGX
  nginx -c "$1/nginx.conf"
}

# gateway_conf DIR LISTEN_PORT ADMIN_PORT APP_PORT THREADS: writes DIR/gw.yaml with two
# products: `bench` (100 seats, checks under /sdata/mobile) and `full` (its only grant has
# expired, so every check under /full/sdata/mobile fails, answered by the gateway alone).
gateway_conf() {
  cat > "$1/gw.yaml" <<YAML
listen: 127.0.0.1:$2
admin: { listen: 127.0.0.1:$3 }
store: { kind: embedded, path: $1/seats.redb }
threads: $5
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
YAML
}
