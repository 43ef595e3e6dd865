-- seatgate seat ledger: every change to a pool is one atomic call of this script.
--
-- KEYS (all share the pool's hash tag {prefix:product:pool}, so they live in one cluster slot):
--   1 z       zset  seat id -> deadline (ms): seats that count (standby, active, ending)
--   2 seats   hash  seat id -> JSON record (paused seats included)
--   3 sess    hash  session hex -> seat id
--   4 pend    zset  lease id -> expiry: reservations of logins in flight that count
--   5 pinfo   hash  lease id -> JSON {user, overflow}
--   6 gone    hash  session hex -> release reason (tombstones: an ended cookie never comes back)
--   7 gonez   zset  session hex -> tombstone expiry
--   8 stats   hash  peak, denied, overflow_ms, epoch
--   9 paused  zset  seat id -> end of lifetime (paused seats hold no seat)
--  10 ended   zset  seat id -> until (so a second `end` says already_ended)
--  11 unc     zset  seat id -> deadline: exempt and named sessions (known, never counted)
-- The holder indexes (what admission reads instead of walking the pool; see `ensure_index`):
--  12 ixmeta  hash  version, total (the holders the indexes count: ZCARD z + ZCARD pend)
--  13 ixuser  hash  user ('' for none) -> holders of that user (seats in z, leases in pend)
--  14 ixseat  zset  "user\0device\0seat id" (score 0, read by lex range): the seats in z
--  15 ixover  set   seat ids in z whose record says overflow
--  16 ixlease zset  "user\0lease id" (score 0): the leases in pend
-- The waiting line (issue 12; only a pool whose spec has `queue` keeps one):
--  17 qz      zset  ticket hex -> join sequence: the line, ready tickets included (ZRANK = position)
--  18 qt      hash  ticket hex -> JSON ticket {id, key, lease, user, client, joined_at, last_poll
--                   (poll or join: abandonment), polled_at (polls only: too soon), state, ready_until}
--  19 qwait   zset  ticket hex -> join sequence: the waiting tickets (the head is promoted first)
--  20 qpoll   zset  ticket hex -> last poll: waiting tickets, for abandonment
--  21 qjoin   zset  ticket hex -> joined at: waiting tickets, for max_wait
--  22 qready  zset  ticket hex -> ready until: ready tickets; the seat held for each is a lease in
--                   pend (its pinfo names the ticket), so a login with the ticket's lease id finds it
--  23 qid     hash  public ticket id -> ticket hex (admin removal)
--  24 qrate   hash  minute -> releases of counted seats in it (the last hour's), 'since' -> first
-- Every index is keyed by what a call looks up, so no call walks the line or the pool: lapsed
-- tickets come from score ranges, positions from ZRANK, the needed-th seat deadline from z by rank.
-- They are a cache of z, pend and the records, never the truth: capacity is always counted with
-- ZCARD, and every candidate seat they name is checked against z and its record. A replica
-- running the script from before them (a rolling upgrade) writes z and pend without them: a
-- change of the holders' total is seen by the next call, one that leaves the total as it was by
-- the sweep's walk over the indexes (within ZCARD / 256 sweeps). A drift found makes the pool
-- counted by walking it (what the older script costs) until none was found for DRIFT_QUIET,
-- then rebuilt once, a slice of REBUILD_SLICE holders per call, so no call blocks Redis for the
-- whole pool (until it is through, calls read the holders it has reached). Until a swap is
-- found only per-user and per-group counts and reuse can be off, never the pool's capacity.
-- ARGV[1] = op, ARGV[2] = pool spec JSON, rest per op. Every answer is one JSON document.
--
-- Time comes from Redis TIME only (tests may add `clock_offset` to it, or pin it with
-- `clock_ms`, through the spec JSON). The rules (`deadline`, `expiry`, `admit`) mirror the pure
-- Rust functions in policy::seat and policy::admission; tests check both agree.

local Z, SEATS, SESS, PEND, PINFO, GONE, GONEZ, STATS, PAUSED, ENDED, UNC =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local IXMETA, IXUSER, IXSEAT, IXOVER, IXLEASE = KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
-- Bumped whenever what the indexes hold changes: a script finding another version rebuilds.
-- (Chunked rebuilds and the orphan marks kept the version: an older replica that keeps the
-- indexes reads them alike, and a mark it never wrote only makes a total off, found as a drift.)
local IX_VERSION = '1'
local QZ, QT, QWAIT, QPOLL, QJOIN, QREADY, QID, QRATE =
  KEYS[17], KEYS[18], KEYS[19], KEYS[20], KEYS[21], KEYS[22], KEYS[23], KEYS[24]
local op = ARGV[1]
local spec = cjson.decode(ARGV[2])
local ENDED_FOR = 3600000
-- The call's time (set once known): release counting buckets by it.
local CALL_NOW = 0
local RATE_MINUTE = 60000
local RATE_MINUTES = 60

local function str(v)
  if v == nil or v == cjson.null or v == '' then return nil end
  return v
end

-- The pool's `queue` settings, nil when it keeps no line.
local Q = str(spec.queue)

local function redis_now()
  if str(spec.clock_ms) then return spec.clock_ms end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (tonumber(spec.clock_offset) or 0)
end

-- Exempt and named sessions: known and listed, never counted.
local function uncounted(r)
  return r.state == 'exempt' or r.state == 'named'
end

-- Whether `ending_at` applies: an ending seat, or an uncounted session ended with grace.
local function ends(r)
  return (r.state == 'ending' or uncounted(r)) and (tonumber(r.ending_at) or 0) > 0
end

local function capacity(now)
  local c = 0
  for _, g in ipairs(spec.grants) do
    local nb, ex = str(g.not_before), str(g.expires)
    if (nb == nil or now >= nb) and (ex == nil or now < ex) then c = c + g.seats end
  end
  return c
end

-- policy::seat::first_end: the earliest way the seat ends, and when (ties: an end, then
-- lifetime, idle, standby, presence).
local function first_end(r)
  local at, why = r.started_at + spec.max_lifetime, 'lifetime'
  if ends(r) and r.ending_at <= at then at, why = r.ending_at, 'ended' end
  if r.state == 'paused' then return at, why end
  local function consider(t, w)
    if t < at then at, why = t, w end
  end
  consider(r.last_activity + spec.idle_timeout, 'idle')
  if r.state == 'standby' then consider(r.last_activity + spec.standby_timeout, 'standby') end
  local pt = str(spec.presence_timeout)
  if pt and r.last_heartbeat > 0 then consider(math.max(r.last_heartbeat, r.last_activity) + pt, 'presence') end
  return at, why
end

-- policy::seat::expiry
local function expiry(r, now)
  local at, why = first_end(r)
  if now >= at then return why end
  return nil
end

-- policy::seat::deadline: the first instant at which `expiry` is not nil.
local function deadline(r)
  local at = first_end(r)
  return at
end

local function group_of(user)
  if user == nil then return nil end
  for i, g in ipairs(spec.groups) do
    for _, u in ipairs(g.users) do
      if u == user then return i end
    end
  end
  return nil
end

-- policy::admission::Counts: how many hold, how many of them are `user`, how many are in
-- each group. `add` counts one holder's user (false = no user).
local function new_counts(user)
  local c = { in_use = 0, mine = 0, per_group = {} }
  for i = 1, #spec.groups do c.per_group[i] = 0 end
  function c.add(h)
    c.in_use = c.in_use + 1
    if h and h == user then c.mine = c.mine + 1 end
    local g = nil
    if h then g = group_of(h) end
    if g then c.per_group[g] = c.per_group[g] + 1 end
  end
  return c
end

-- policy::admission::admit_counts.
local function admit(c, user, now, overflow_left)
  local cap = capacity(now)
  local in_use = c.in_use
  local function full(reason) return { kind = 'full', in_use = in_use, capacity = cap, reason = reason } end
  local max_sessions = str(spec.max_sessions)
  if max_sessions and user then
    if c.mine >= max_sessions then return full('user_max') end
  end
  local my_group = group_of(user)
  local per_group = c.per_group
  local general_used = in_use
  for i = 1, #spec.groups do general_used = general_used - per_group[i] end
  if my_group then
    local m = str(spec.groups[my_group].max)
    if m and per_group[my_group] >= m then return full('group_max') end
  end
  local reserved = 0
  for i, g in ipairs(spec.groups) do
    reserved = reserved + g.reserve
    general_used = general_used + math.max(0, per_group[i] - g.reserve)
  end
  local general_capacity = math.max(0, cap - reserved)
  local fits = in_use < cap and
    ((my_group ~= nil and per_group[my_group] < spec.groups[my_group].reserve) or general_used < general_capacity)
  if fits then return { kind = 'seat' } end
  if overflow_left ~= nil then
    if overflow_left > 0 then return { kind = 'overflow' } end
    return full('overflow_spent')
  end
  return full('pool')
end

local function load(id)
  local raw = redis.call('HGET', SEATS, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save(r)
  redis.call('HSET', SEATS, r.id, cjson.encode(r))
end

-- Whether this call keeps the indexes up (set once the call has checked them): only a pool
-- that reads them does (reuse, groups, max_sessions, overflow); any other counts with ZCARD.
local IX = false
-- Whether this call counts by walking the pool instead (the indexes drifted a moment ago: an
-- older replica is still writing, and a rebuild per call would cost more than the walk).
local WALK = false
-- Whether a rebuild is under way (not through every holder yet): this call reads what it has
-- reached. A walk per call meanwhile would cost each call what the one-pass rebuild did (about
-- 1 s at 100k seats); the pool's capacity is counted with ZCARD either way.
local REBUILDING = false
-- How long after a drift the pool is walked before the indexes are rebuilt again.
local DRIFT_QUIET = 60000
-- Holders a call adds to a rebuild under way: one pass over a large pool in one call blocks
-- Redis past the gateway's call timeout (about 1 s at 100k seats), so it is spread over calls.
local REBUILD_SLICE = 8192

-- Index upkeep. Every change to the members of z or pend goes through these, so the indexes
-- always count exactly the holders `holders` used to walk. A count moves only when the member
-- came or went, so adding a holder twice or dropping one never added changes nothing: a rebuild
-- spread over calls (which may meet a holder twice, or not yet) and the calls between its steps
-- (which keep the indexes up as usual) never count one twice.
local function ix_count(user, d)
  if not IX then return end
  local u = str(user) or ''
  if redis.call('HINCRBY', IXUSER, u, d) <= 0 then redis.call('HDEL', IXUSER, u) end
  redis.call('HINCRBY', IXMETA, 'total', d)
end

local function ix_member(r)
  return (str(r.user) or '') .. '\0' .. (str(r.device) or '') .. '\0' .. r.id
end

local function ix_over(r)
  if not IX then return end
  if r.overflow then redis.call('SADD', IXOVER, r.id) else redis.call('SREM', IXOVER, r.id) end
end

-- A seat entered z.
local function ix_seat_in(r)
  if not IX then return end
  if redis.call('ZADD', IXSEAT, 0, ix_member(r)) == 1 then ix_count(r.user, 1) end
  ix_over(r)
end

-- A seat left z.
local function ix_seat_out(r)
  if not IX then return end
  if redis.call('ZREM', IXSEAT, ix_member(r)) == 1 then ix_count(r.user, -1) end
  redis.call('SREM', IXOVER, r.id)
end

-- A seat id in z without a record (counted for no user): ixmeta marks it, so it counts once.
local function ix_orphan_in(id)
  if not IX then return end
  if redis.call('HSETNX', IXMETA, 'o:' .. id, 1) == 1 then ix_count('', 1) end
end

local function ix_orphan_out(id)
  if not IX then return end
  if redis.call('HDEL', IXMETA, 'o:' .. id) == 1 then ix_count('', -1) end
end

-- The user a lease's info names ('' for none, or no info).
local function lease_user(praw)
  if not praw then return '' end
  return str(cjson.decode(praw).user) or ''
end

local function ix_lease_member(user, lid)
  return (str(user) or '') .. '\0' .. lid
end

-- A lease of `user` entered (d = 1) or left (d = -1) pend.
local function ix_lease(user, lid, d)
  if not IX then return end
  local changed
  if d > 0 then
    changed = redis.call('ZADD', IXLEASE, 0, ix_lease_member(user, lid))
  else
    changed = redis.call('ZREM', IXLEASE, ix_lease_member(user, lid))
  end
  if changed == 1 then ix_count(user, d) end
end

-- `lease` holds a seat in pend until `till`, for the user its `info` names. One already there
-- (a lease without info, or a login reserving under a ready ticket's lease id) is counted for
-- that user from now on, no longer for the one its old info named.
local function pend_put(lease, info, till)
  if redis.call('ZADD', PEND, till, lease) == 1 then
    ix_lease(info.user, lease, 1)
  else
    ix_lease(lease_user(redis.call('HGET', PINFO, lease)), lease, -1)
    ix_lease(info.user, lease, 1)
  end
  redis.call('HSET', PINFO, lease, cjson.encode(info))
end

-- `lease`, whose info was `praw`, leaves pend.
local function pend_drop(lease, praw)
  redis.call('HDEL', PINFO, lease)
  if redis.call('ZREM', PEND, lease) == 1 then ix_lease(lease_user(praw), lease, -1) end
end

-- A rebuild starts: the indexes emptied (UNLINK frees a large one in the background), then
-- z and pend are scanned a slice per call (`rebuild_step`). ZSCAN returns every member present
-- from the scan's start to its end; one that comes or goes meanwhile is kept up by the call that
-- moves it, and one met twice counts once (see the upkeep above).
local function rebuild_start()
  local n = tonumber(redis.call('HGET', IXMETA, 'rebuilds') or '0')
  redis.call('UNLINK', IXUSER, IXSEAT, IXOVER, IXLEASE, IXMETA)
  redis.call('HSET', IXMETA, 'total', 0, 'rebuilds', n + 1, 'rb', 'z', 'rbc', '0')
end

-- After a drift the pool is walked for DRIFT_QUIET, then rebuilt (see `ensure_index`).
local function drifted(now)
  redis.call('HSET', IXMETA, 'drift_at', now)
  redis.call('HDEL', IXMETA, 'version', 'rb', 'rbc')
end

-- One slice of the rebuild under way (about `n` holders): 'more' until it is through, then
-- 'built' (the indexes count every holder and are read from the next call on) or 'drifted'.
local function rebuild_step(n, now)
  local m = redis.call('HMGET', IXMETA, 'rb', 'rbc')
  local phase, cursor, left = m[1], m[2] or '0', n
  while left > 0 and phase ~= 'done' do
    local key = Z
    if phase == 'p' then key = PEND end
    local res = redis.call('ZSCAN', key, cursor, 'COUNT', math.min(left, 1000))
    cursor = res[1]
    local items = res[2]
    for i = 1, #items, 2 do
      local id = items[i]
      if phase == 'z' then
        local r = load(id)
        if r then ix_seat_in(r) else ix_orphan_in(id) end
      else
        ix_lease(lease_user(redis.call('HGET', PINFO, id)), id, 1)
      end
    end
    left = left - math.max(1, #items / 2)
    if cursor == '0' then
      if phase == 'z' then phase = 'p' else phase = 'done' end
    end
  end
  if phase ~= 'done' then
    redis.call('HSET', IXMETA, 'rb', phase, 'rbc', cursor)
    return 'more'
  end
  -- Every call in between kept the indexes up, so they count every holder now, unless an
  -- older replica wrote around them meanwhile: then it is a drift like any other.
  if tonumber(redis.call('HGET', IXMETA, 'total')) ~= redis.call('ZCARD', Z) + redis.call('ZCARD', PEND) then
    drifted(now)
    return 'drifted'
  end
  redis.call('HDEL', IXMETA, 'rb', 'rbc')
  redis.call('HSET', IXMETA, 'version', IX_VERSION)
  return 'built'
end

-- The next `n` items of `key` (a zset) from the rank kept in ixmeta `field`, which moves on
-- (back to 0 at the end).
local function window(field, key, n)
  local at = tonumber(redis.call('HGET', IXMETA, field) or '0')
  local items = redis.call('ZRANGE', key, at, at + n - 1)
  if #items < n then at = 0 else at = at + n end
  redis.call('HSET', IXMETA, field, at)
  return items
end

-- One step of a walk that checks the indexes against the pool, `n` items of each per call: an
-- older replica that added and dropped as many holders between two calls of this script left
-- the total right, but not the members. False = they drifted.
local function index_sound(n)
  for _, id in ipairs(window('vz', Z, n)) do
    local r = load(id)
    if r and not redis.call('ZSCORE', IXSEAT, ix_member(r)) then return false end
  end
  for _, m in ipairs(window('vs', IXSEAT, n)) do
    local id = m:match('([^%z]*)$')
    local r = redis.call('ZSCORE', Z, id) and load(id)
    if not r or ix_member(r) ~= m then return false end
  end
  for _, lid in ipairs(window('vp', PEND, n)) do
    local m = ix_lease_member(lease_user(redis.call('HGET', PINFO, lid)), lid)
    if not redis.call('ZSCORE', IXLEASE, m) then return false end
  end
  for _, m in ipairs(window('vl', IXLEASE, n)) do
    local lid = m:match('([^%z]*)$')
    if not redis.call('ZSCORE', PEND, lid)
      or ix_lease_member(lease_user(redis.call('HGET', PINFO, lid)), lid) ~= m then return false end
  end
  local scan = redis.call('HSCAN', IXUSER, redis.call('HGET', IXMETA, 'vu') or '0', 'COUNT', n)
  redis.call('HSET', IXMETA, 'vu', scan[1])
  for i = 1, #scan[2], 2 do
    local u = scan[2][i]
    if u ~= '' then
      local lo, hi = '[' .. u .. '\0', '(' .. u .. '\1'
      local held = redis.call('ZLEXCOUNT', IXSEAT, lo, hi) + redis.call('ZLEXCOUNT', IXLEASE, lo, hi)
      if held ~= tonumber(scan[2][i + 1]) then return false end
    end
  end
  return true
end

-- The indexes are rebuilt when missing, of another version, or drifted. Drift comes from a
-- script that does not keep them (an older seatgate replica during a rolling upgrade, which
-- never writes ixmeta): a seat or lease it adds or drops changes z or pend but not the total.
-- After a drift the pool is walked, as the older script does, for DRIFT_QUIET; then rebuilt.
local function ensure_index(now)
  local m = redis.call('HMGET', IXMETA, 'version', 'total', 'drift_at', 'rb')
  local total = redis.call('ZCARD', Z) + redis.call('ZCARD', PEND)
  if m[1] == IX_VERSION then
    if tonumber(m[2]) == total then return end
    drifted(now)
    m[3], m[4] = now, nil
  end
  local drift_at = tonumber(m[3])
  if drift_at and now - drift_at < DRIFT_QUIET then
    IX, WALK = false, true
    return
  end
  if not m[4] then rebuild_start() end
  -- Until the rebuild is through, this call keeps the indexes up for whatever it changes and
  -- reads the holders it has reached: per-user and per-group counts, reuse and overflow seats
  -- may be short of the pool's meanwhile (as while a drift is not found yet), never capacity.
  IX = true
  local step = rebuild_step(REBUILD_SLICE, now)
  if step == 'more' then
    REBUILDING = true
  elseif step == 'drifted' then
    -- Found at the rebuild's end: walked without upkeep, as after any drift.
    IX, WALK = false, true
  end
end

-- Overflow seats in z, in z's order (deadline, then id), with their deadline.
local function overflow_seats()
  local out = {}
  if WALK then
    for _, id in ipairs(redis.call('ZRANGE', Z, 0, -1)) do
      local r = load(id)
      if r and r.overflow then table.insert(out, { id = id, score = tonumber(redis.call('ZSCORE', Z, id)) }) end
    end
    return out
  end
  for _, id in ipairs(redis.call('SMEMBERS', IXOVER)) do
    local sc = redis.call('ZSCORE', Z, id)
    if sc then table.insert(out, { id = id, score = tonumber(sc) }) end
  end
  table.sort(out, function(a, b)
    if a.score ~= b.score then return a.score < b.score end
    return a.id < b.id
  end)
  return out
end

local released = {}

-- A counted seat left at `at`: one more release in its minute (the wait estimate's rate). The
-- hash keeps the window's minutes only: a new minute's first release drops those past it.
local function count_release(at)
  local nowm = math.floor(CALL_NOW / RATE_MINUTE)
  local m = math.floor(at / RATE_MINUTE)
  if m <= nowm - RATE_MINUTES or m > nowm then return end
  if redis.call('HINCRBY', QRATE, m, 1) == 1 then
    -- A minute's first release: the pool's first release ever is one (the hash is empty then).
    redis.call('HSETNX', QRATE, 'since', at)
    local old = {}
    for _, f in ipairs(redis.call('HKEYS', QRATE)) do
      local fm = tonumber(f)
      if fm and fm <= nowm - RATE_MINUTES then table.insert(old, f) end
    end
    if #old > 0 then redis.call('HDEL', QRATE, unpack(old)) end
  end
end

-- Releases in the window ending at `now`, and when the pool's first release was (nil: never).
local function rate_inputs(now)
  local nowm = math.floor(now / RATE_MINUTE)
  local n, since = 0, nil
  local all = redis.call('HGETALL', QRATE)
  for i = 1, #all, 2 do
    if all[i] == 'since' then
      since = tonumber(all[i + 1])
    else
      local fm = tonumber(all[i])
      if fm and fm > nowm - RATE_MINUTES and fm <= nowm then n = n + (tonumber(all[i + 1]) or 0) end
    end
  end
  return n, since
end

-- Overflow time a held overflow seat has used by `now` (it stops counting at its deadline).
local function overflow_used(r, now)
  if not r.overflow then return 0 end
  return math.max(0, math.min(now, deadline(r)) - r.started_at)
end

-- A seat that left made room: overflow seats beyond what the pool is still over capacity
-- become ordinary seats (oldest first), so overflow time is time spent over capacity, and a
-- spent allowance never ends a seat that fits.
local function promote_overflow(at)
  if not str(spec.overflow_ms) then return end
  local running = {}
  for _, o in ipairs(overflow_seats()) do
    if o.score > at then
      local r = load(o.id)
      if r and r.overflow then table.insert(running, r) end
    end
  end
  if #running == 0 then return end
  local held = redis.call('ZCOUNT', Z, '(' .. at, '+inf') + redis.call('ZCOUNT', PEND, '(' .. at, '+inf')
  local over = math.max(0, held - capacity(at))
  if #running <= over then return end
  table.sort(running, function(a, b)
    if a.started_at ~= b.started_at then return a.started_at < b.started_at end
    return a.id < b.id
  end)
  for i = 1, #running - over do
    local r = running[i]
    redis.call('HINCRBY', STATS, 'overflow_ms', overflow_used(r, at))
    r.overflow = false
    redis.call('HSET', SEATS, r.id, cjson.encode(r))
    ix_over(r)
  end
end

-- Drops a seat as of `at` (its deadline when found expired): no longer counts, its cookie is
-- tombstoned, observers hear of it.
local function release(r, reason, at)
  local held = redis.call('ZREM', Z, r.id) == 1
  if held then ix_seat_out(r) end
  redis.call('ZREM', PAUSED, r.id)
  redis.call('ZREM', UNC, r.id)
  redis.call('HDEL', SEATS, r.id)
  local s = str(r.session)
  if s and redis.call('HGET', SESS, s) == r.id then
    redis.call('HDEL', SESS, s)
    redis.call('HSET', GONE, s, reason)
    redis.call('ZADD', GONEZ, at + spec.max_lifetime, s)
  end
  if held and r.overflow then
    redis.call('HINCRBY', STATS, 'overflow_ms', overflow_used(r, at))
  end
  if held then
    promote_overflow(at)
    count_release(at)
  end
  if reason == 'ended' then redis.call('ZADD', ENDED, at + ENDED_FOR, r.id) end
  table.insert(released, { seat = r, reason = reason })
end

-- Releases a seat found expired at `now` for what ended it, as of when it did.
local function expire(r, now)
  local why = expiry(r, now) or 'idle'
  release(r, why, math.min(now, deadline(r)))
  return why
end

-- Lazy expiry: whatever is past its deadline is released before anything is counted.
local function purge(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', Z, '-inf', now)) do
    local r = load(id)
    if r then
      expire(r, now)
    elseif redis.call('ZREM', Z, id) == 1 then
      ix_orphan_out(id)
    end
  end
  local leases = redis.call('ZRANGEBYSCORE', PEND, '-inf', now)
  if #leases > 0 then
    for _, lid in ipairs(leases) do
      ix_lease(lease_user(redis.call('HGET', PINFO, lid)), lid, -1)
    end
    redis.call('ZREMRANGEBYSCORE', PEND, '-inf', now)
    redis.call('HDEL', PINFO, unpack(leases))
  end
end

local function epoch()
  local e = redis.call('HGET', STATS, 'epoch')
  if not e then
    local t = redis.call('TIME')
    e = t[1] .. t[2]
    redis.call('HSET', STATS, 'epoch', e)
  end
  return e
end

local function grouped()
  return #spec.groups > 0 or str(spec.max_sessions) ~= nil
end

-- The holders of every seat and counting lease, counted for `user` (after `purge`). Only a
-- pool with groups or max_sessions reads their users; any other counts two cardinalities.
-- The per-user and per-group counts come from ixuser: a group's count is what its users hold
-- (a user in two groups counts in the first, as `group_of` says).
local function holders(now, user)
  local c = new_counts(user)
  c.in_use = redis.call('ZCARD', Z) + redis.call('ZCARD', PEND)
  if not grouped() then return c end
  if WALK then
    c.in_use = 0
    for _, id in ipairs(redis.call('ZRANGE', Z, 0, -1)) do
      local r = load(id)
      c.add((r and str(r.user)) or false)
    end
    for _, lid in ipairs(redis.call('ZRANGE', PEND, 0, -1)) do
      c.add(str(lease_user(redis.call('HGET', PINFO, lid))) or false)
    end
    return c
  end
  if user then c.mine = tonumber(redis.call('HGET', IXUSER, user) or '0') end
  local seen = {}
  for i, g in ipairs(spec.groups) do
    local users = {}
    for _, u in ipairs(g.users) do
      if not seen[u] then
        seen[u] = true
        table.insert(users, u)
      end
    end
    local n = 0
    for k = 1, #users, 1000 do
      local part = {}
      for j = k, math.min(k + 999, #users) do part[#part + 1] = users[j] end
      for _, v in ipairs(redis.call('HMGET', IXUSER, unpack(part))) do n = n + (tonumber(v) or 0) end
    end
    c.per_group[i] = n
  end
  return c
end

local function overflow_left(now)
  local allowance = str(spec.overflow_ms)
  if not allowance then return nil end
  local used = tonumber(redis.call('HGET', STATS, 'overflow_ms') or '0')
  for _, o in ipairs(overflow_seats()) do
    local r = load(o.id)
    if r then used = used + overflow_used(r, now) end
  end
  return math.max(0, allowance - used)
end

local function bump_peak(n)
  local peak = tonumber(redis.call('HGET', STATS, 'peak') or '0')
  if n > peak then redis.call('HSET', STATS, 'peak', n) end
end

local function reusable(user, device, now)
  if user == nil or spec.seats_per == 'session' then return nil end
  if spec.seats_per == 'user_device' and device == nil then return nil end
  -- The user's (or user and device's) seats in z, from ixseat; ties on last activity go to
  -- the seat first in z's order (deadline, then id), as a walk of z would find them.
  local lo = user .. '\0'
  if spec.seats_per == 'user_device' then lo = lo .. device .. '\0' end
  local hi = lo:sub(1, -2) .. '\1'
  local best, best_la, best_sc = nil, -1, nil
  local ids = {}
  if WALK then
    ids = redis.call('ZRANGEBYSCORE', Z, '(' .. now, '+inf')
  else
    for _, m in ipairs(redis.call('ZRANGEBYLEX', IXSEAT, '[' .. lo, '(' .. hi)) do
      table.insert(ids, m:match('([^%z]*)$'))
    end
  end
  for _, id in ipairs(ids) do
    local sc = tonumber(redis.call('ZSCORE', Z, id) or '-1')
    local r = sc > now and load(id)
    if r and str(r.user) == user and (spec.seats_per == 'user' or str(r.device) == device)
      and (r.state == 'active' or r.state == 'standby') and expiry(r, now) == nil
      and (r.last_activity > best_la
        or (r.last_activity == best_la and (sc < best_sc or (sc == best_sc and id < best)))) then
      best, best_la, best_sc = id, r.last_activity, sc
    end
  end
  return best
end

-- Saves a seat and its deadline in the index of its kind (transitions remove it from the
-- index it leaves themselves).
local function put_seat(r)
  save(r)
  if uncounted(r) then
    redis.call('ZADD', UNC, deadline(r), r.id)
  elseif r.state == 'paused' then
    redis.call('ZADD', PAUSED, deadline(r), r.id)
  elseif redis.call('ZADD', Z, deadline(r), r.id) == 1 then
    ix_seat_in(r)
  else
    ix_over(r)
  end
end

-- The session a cookie leads to, if it still holds; one past its deadline is released.
local function live_of(session, now)
  local id = redis.call('HGET', SESS, session)
  if not id then return nil end
  local r = load(id)
  if not r then
    redis.call('HDEL', SESS, session)
    return nil
  end
  if expiry(r, now) then
    expire(r, now)
    return nil
  end
  return r
end

-- What `end` says of an id that holds nothing (any more).
local function gone_outcome(id, now)
  local until_ = redis.call('ZSCORE', ENDED, id)
  if until_ and tonumber(until_) > now then return 'already_ended' end
  return 'not_found'
end

-- The waiting line. What a call did to it is told back (`line`) like releases are.
local line_events = {}
-- Seat deadlines the view brings for the wait estimate (the earliest this many).
local EARLIEST = 32

local function q_load(tk)
  local raw = redis.call('HGET', QT, tk)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function q_save(t)
  redis.call('HSET', QT, t.key, cjson.encode(t))
end

-- A join again or a poll: abandonment counts from `now` (a waiting ticket's qpoll score too).
local function q_heard(t, now)
  t.last_poll = math.max(t.last_poll, now)
  q_save(t)
  if t.state == 'waiting' then redis.call('ZADD', QPOLL, t.last_poll, t.key) end
end

local function q_position(tk)
  local r = redis.call('ZRANK', QZ, tk)
  if r then return r + 1 end
  return 0
end

-- A ticket as told (events, answers, listings): never its lease id.
local function q_told(t, position)
  return { id = t.id, key = t.key, user = t.user, client = t.client, joined_at = t.joined_at,
    last_poll = t.last_poll, state = t.state, ready_until = t.ready_until, position = position }
end

-- Returns the ticket as told.
local function q_event(t, ev, result, at, position)
  local told = q_told(t, position or q_position(t.key))
  table.insert(line_events, { ticket = told, ev = ev, result = result, at = at })
  return told
end

-- Why and when a ticket left the line by `now` (nil: it has not). A ready ticket lapses with its
-- hold; a waiting one when not polled for abandon_after or past max_wait (the earlier; a tie is
-- an expiry), at once when the pool keeps no line any more (a reload turned it off).
local function q_lapse(t, now)
  if t.state == 'ready' then
    if now >= t.ready_until then return 'expired', t.ready_until end
    return nil
  end
  if not Q then return 'expired', now end
  local at, why = t.joined_at + Q.max_wait, 'expired'
  if t.last_poll + Q.abandon_after < at then at, why = t.last_poll + Q.abandon_after, 'abandoned' end
  if now >= at then return why, at end
  return nil
end

local function q_mark(set, list)
  for _, tk in ipairs(list) do set[tk] = true end
  return set
end

-- Waiting tickets that may have lapsed by `now` (not polled for abandon_after, or past
-- max_wait), added to `set`: two score ranges holding only those.
local function q_waiting_due(now, set)
  q_mark(set, redis.call('ZRANGEBYSCORE', QPOLL, '-inf', now - Q.abandon_after))
  return q_mark(set, redis.call('ZRANGEBYSCORE', QJOIN, '-inf', now - Q.max_wait))
end

-- The tickets that may have lapsed by `now`, from score ranges (a set of ticket hex).
local function q_due(now)
  local due = q_mark({}, redis.call('ZRANGEBYSCORE', QREADY, '-inf', now))
  if Q then return q_waiting_due(now, due) end
  return q_mark(due, redis.call('ZRANGE', QWAIT, 0, -1))
end

-- Tickets in line at `now`: lapsed ones not yet dropped do not count (nor a line the pool no
-- longer keeps).
local function q_length(now)
  if not Q then return 0 end
  local n = redis.call('ZCARD', QZ)
  if n == 0 then return 0 end
  for tk in pairs(q_due(now)) do
    local t = q_load(tk)
    if not t or q_lapse(t, now) then n = n - 1 end
  end
  return math.max(0, n)
end

-- Waiting tickets at `now` that hold newcomers back (barging off), lapsed ones not yet dropped
-- left out: a cardinality and two score ranges holding only the lapsed (the view's cost stays
-- flat however long the line).
local function q_holding_back(now)
  if not Q or Q.barging then return 0 end
  local n = redis.call('ZCARD', QWAIT)
  if n == 0 then return 0 end
  for _ in pairs(q_waiting_due(now, {})) do n = n - 1 end
  return math.max(0, n)
end

-- The seat held for a ready ticket is given back (it left the line); `any`: also a reservation
-- its login made under its lease id (an admitted ticket's lease holds nothing any more).
local function q_unhold(t, any)
  local praw = redis.call('HGET', PINFO, t.lease)
  if praw and (any or cjson.decode(praw).ticket == t.key) then
    pend_drop(t.lease, praw)
  end
end

local function q_forget(tk)
  for _, k in ipairs({ QZ, QWAIT, QPOLL, QJOIN, QREADY }) do redis.call('ZREM', k, tk) end
  redis.call('HDEL', QT, tk)
end

-- Returns the ticket as told (where it stood in line).
local function q_leave(t, result, at)
  local position = q_position(t.key)
  if t.state == 'ready' or result == 'admitted' then q_unhold(t, result == 'admitted') end
  q_forget(t.key)
  redis.call('HDEL', QID, t.id)
  return q_event(t, 'left', result, at, position)
end

-- Drops whatever left the line by `now`, in line order, as of when it did.
local function q_reap(now)
  local list = {}
  for tk in pairs(q_due(now)) do
    table.insert(list, { tk = tk, seq = tonumber(redis.call('ZSCORE', QZ, tk) or '0') })
  end
  table.sort(list, function(a, b)
    if a.seq ~= b.seq then return a.seq < b.seq end
    return a.tk < b.tk
  end)
  for _, e in ipairs(list) do
    local t = q_load(e.tk)
    if not t then
      q_forget(e.tk)
    else
      local why, at = q_lapse(t, now)
      if why then q_leave(t, why, at) end
    end
  end
end

-- While a seat is free for the head waiting ticket (the admission rules for its user, overflow
-- never), it becomes ready: a lease in pend under the ticket's lease id holds the seat until
-- ready_until, so its login's reserve finds it and nobody else's is counted into it.
local function q_promote(now)
  if not Q then return end
  while true do
    local head = redis.call('ZRANGE', QWAIT, 0, 0)[1]
    if not head then return end
    local t = q_load(head)
    if not t then
      q_forget(head)
    else
      local user = str(t.user)
      if admit(holders(now, user), user, now, nil).kind ~= 'seat' then return end
      t.state, t.ready_until = 'ready', now + Q.hold
      -- Its login may be reserving already (barging on): that lease is the held seat now.
      pend_put(t.lease, { user = user or '', overflow = false, ticket = t.key }, t.ready_until)
      q_save(t)
      redis.call('ZREM', QWAIT, t.key)
      redis.call('ZREM', QPOLL, t.key)
      redis.call('ZREM', QJOIN, t.key)
      redis.call('ZADD', QREADY, t.ready_until, t.key)
      bump_peak(redis.call('ZCARD', Z) + redis.call('ZCARD', PEND))
      q_event(t, 'ready', nil, now)
    end
  end
end

-- Whether a reservation that is not a ready ticket's must join the back (barging off and
-- tickets waiting).
local function q_blocks()
  return Q and not Q.barging and redis.call('ZCARD', QWAIT) > 0
end

-- The `i`-th (1-based) earliest deadline of the seats that count, after `purge` (z by rank).
local function nth_deadline(i, now)
  local past = redis.call('ZCOUNT', Z, '-inf', now)
  local d = redis.call('ZRANGE', Z, past + i - 1, past + i - 1, 'WITHSCORES')
  return tonumber(d[2])
end

local function earliest(now)
  local out = {}
  local d = redis.call('ZRANGEBYSCORE', Z, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, EARLIEST)
  for i = 2, #d, 2 do table.insert(out, tonumber(d[i])) end
  return out
end

-- A ticket's status as its page is told; a waiting one's with what its estimate reads: the
-- deadline of the seat whose end frees one for it (as many seats as waiting tickets up to it)
-- and the pool's releases of the last hour.
local function q_status(t, now)
  local s = { id = t.id, state = t.state, position = q_position(t.key), ready_until = t.ready_until,
    length = redis.call('ZCARD', QZ) }
  if t.state == 'waiting' then
    s.needed = (redis.call('ZRANK', QWAIT, t.key) or 0) + 1
    s.deadline = nth_deadline(s.needed, now)
    s.releases, s.since = rate_inputs(now)
  end
  return s
end

local function answer(t)
  t.released = released
  t.line = line_events
  return cjson.encode(t)
end

local now = redis_now()
CALL_NOW = now
if op ~= 'view' and op ~= 'list' and op ~= 'lookup' and op ~= 'rules' and op ~= 'line' then
  if #spec.groups > 0 or str(spec.max_sessions) or spec.seats_per ~= 'session' or str(spec.overflow_ms) then
    IX = true
    ensure_index(now)
  else
    -- Not kept up from here: a pool that needs them again rebuilds them first.
    redis.call('HDEL', IXMETA, 'version', 'rb', 'rbc')
  end
end

if op == 'reserve' then
  -- ARGV: lease, user, device, ttl (ms; empty = standby_timeout: a seat held for a user)
  local lease, user, device = ARGV[3], str(ARGV[4]), str(ARGV[5])
  local ttl = spec.standby_timeout
  if str(ARGV[6]) then ttl = tonumber(ARGV[6]) end
  purge(now)
  if Q then
    q_reap(now)
    -- Barging off: a freed seat goes to the head of the line before any newcomer.
    if not Q.barging then q_promote(now) end
  end
  local p = redis.call('HGET', PINFO, lease)
  if p then
    return answer({ kind = 'granted', overflow = cjson.decode(p).overflow, now = now })
  end
  local reuse = reusable(user, device, now)
  if reuse then return answer({ kind = 'granted', reuse = reuse, overflow = false, now = now }) end
  if q_blocks() then
    -- Tickets wait for a seat: newcomers join the back of the line.
    redis.call('HINCRBY', STATS, 'denied', 1)
    return answer({ kind = 'full', in_use = redis.call('ZCARD', Z) + redis.call('ZCARD', PEND),
      capacity = capacity(now), reason = 'pool', now = now })
  end
  local users = holders(now, user)
  local a = admit(users, user, now, overflow_left(now))
  if a.kind == 'full' then
    redis.call('HINCRBY', STATS, 'denied', 1)
    a.now = now
    return answer(a)
  end
  local overflow = a.kind == 'overflow'
  pend_put(lease, { user = user or '', overflow = overflow }, now + ttl)
  bump_peak(users.in_use + 1)
  return answer({ kind = 'granted', overflow = overflow, now = now })

elseif op == 'commit' then
  -- ARGV: lease, reuse, user, device, client, session, new seat id
  local lease, reuse, user, device, client, session, new_id =
    ARGV[3], str(ARGV[4]), str(ARGV[5]), str(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
  purge(now)
  local praw = redis.call('HGET', PINFO, lease)
  pend_drop(lease, praw)
  -- A cookie that leads to a live session (any state) keeps it: the lease is dropped, so
  -- concurrent requests with one adopted cookie never take two seats.
  local have = live_of(session, now)
  if have then return answer({ kind = 'seat', id = have.id, epoch = epoch() }) end
  if reuse then
    local r = load(reuse)
    if r and redis.call('ZSCORE', Z, reuse) and expiry(r, now) == nil and r.state ~= 'ending' then
      local old = str(r.session)
      r.session = session
      r.last_activity = now
      put_seat(r)
      if old and old ~= session and redis.call('HGET', SESS, old) == reuse then
        redis.call('HDEL', SESS, old)
        redis.call('HSET', GONE, old, 'replaced')
        redis.call('ZADD', GONEZ, now + spec.max_lifetime, old)
      end
      redis.call('HSET', SESS, session, reuse)
      redis.call('HDEL', GONE, session)
      redis.call('ZREM', GONEZ, session)
      return answer({ kind = 'seat', id = reuse, replaced = old or '', epoch = epoch() })
    end
  end
  local overflow = false
  if praw then
    overflow = cjson.decode(praw).overflow
    -- Reserved beyond capacity, but a seat left meanwhile: it fits now.
    if overflow and redis.call('ZCOUNT', Z, '(' .. now, '+inf') + redis.call('ZCOUNT', PEND, '(' .. now, '+inf') < capacity(now) then
      overflow = false
    end
  else
    -- The lease expired (slow app) or its reusable seat went away: admit afresh (behind the
    -- line, when it keeps newcomers back).
    if q_blocks() then return answer({ kind = 'lost' }) end
    local a = admit(holders(now, user), user, now, overflow_left(now))
    if a.kind == 'full' then return answer({ kind = 'lost' }) end
    overflow = a.kind == 'overflow'
  end
  local r = { id = new_id, user = user or '', device = device or '', client = client, session = session,
    started_at = now, last_activity = now, last_heartbeat = 0, last_request = now, last_input = 0, state = 'standby', ending_at = 0,
    overflow = overflow, ended_by = '' }
  put_seat(r)
  redis.call('HSET', SESS, session, new_id)
  redis.call('HDEL', GONE, session)
  redis.call('ZREM', GONEZ, session)
  bump_peak(redis.call('ZCARD', Z) + redis.call('ZCARD', PEND))
  return answer({ kind = 'seat', id = new_id, epoch = epoch() })

elseif op == 'cancel' then
  local praw = redis.call('HGET', PINFO, ARGV[3])
  -- A ready ticket's seat stays held until its ready_until: its failed login may try again.
  if praw and str(cjson.decode(praw).ticket) then return answer({ kind = 'ok' }) end
  pend_drop(ARGV[3], praw)
  return answer({ kind = 'ok' })

elseif op == 'touch' or op == 'heartbeat' then
  -- ARGV: session, flag: touch '0' = a request that is not activity (last_request only);
  -- heartbeat '1' = the person gave input since the last beat (activity and last_input).
  local session = ARGV[3]
  local flag = ARGV[4]
  local id = redis.call('HGET', SESS, session)
  local r = id and load(id)
  if not r then
    if id then redis.call('HDEL', SESS, session) end
    local reason = redis.call('HGET', GONE, session)
    local until_ = redis.call('ZSCORE', GONEZ, session)
    if reason and until_ and tonumber(until_) > now then
      return answer({ kind = 'gone', reason = reason, gone_until = tonumber(until_), epoch = epoch() })
    end
    return answer({ kind = 'gone', reason = 'unknown', epoch = epoch() })
  end
  if expiry(r, now) then
    local gone_until = math.min(now, deadline(r)) + spec.max_lifetime
    local why = expire(r, now)
    return answer({ kind = 'gone', reason = why, gone_until = gone_until, epoch = epoch() })
  end
  if op == 'heartbeat' then
    if r.state == 'paused' then return answer({ kind = 'gone', reason = 'paused', epoch = epoch() }) end
    r.last_heartbeat = now
    if flag == '1' then
      r.last_activity = math.max(r.last_activity, now)
      r.last_input = now
    end
    put_seat(r)
    return answer({ kind = 'held', seat = r, epoch = epoch() })
  end
  r.last_request = now
  if r.state == 'paused' then
    -- A request from a paused session resumes it, if a seat is free.
    purge(now)
    local a = admit(holders(now, str(r.user)), str(r.user), now, nil)
    if a.kind == 'full' then
      redis.call('HINCRBY', STATS, 'denied', 1)
      return answer({ kind = 'gone', reason = 'paused', epoch = epoch() })
    end
    redis.call('ZREM', PAUSED, r.id)
    r.state = 'active'
    r.last_activity = now
    put_seat(r)
    bump_peak(redis.call('ZCARD', Z) + redis.call('ZCARD', PEND))
    return answer({ kind = 'held', seat = r, resumed = r, epoch = epoch() })
  end
  -- A standby seat's second request is activity whatever it is: it becomes active.
  if flag ~= '0' or r.state == 'standby' then r.last_activity = now end
  if r.state == 'standby' then r.state = 'active' end
  put_seat(r)
  return answer({ kind = 'held', seat = r, epoch = epoch() })

elseif op == 'restore' then
  -- ARGV: seat JSON. A session this gateway knew held a seat before Redis lost its data
  -- (epoch changed): it takes its seat back through normal admission, never beyond capacity.
  local r = cjson.decode(ARGV[3])
  purge(now)
  if redis.call('HGET', SESS, r.session) or redis.call('HGET', GONE, r.session) then
    return answer({ kind = 'skip' })
  end
  if not uncounted(r) then
    local a = admit(holders(now, str(r.user)), str(r.user), now, nil)
    if a.kind == 'full' then return answer({ kind = 'full' }) end
    if r.state ~= 'ending' then r.state = 'active' end
  end
  r.last_activity = now
  if expiry(r, now) then return answer({ kind = 'full' }) end
  put_seat(r)
  redis.call('HSET', SESS, r.session, r.id)
  bump_peak(redis.call('ZCARD', Z) + redis.call('ZCARD', PEND))
  return answer({ kind = 'held', seat = r, epoch = epoch() })

elseif op == 'release' then
  -- ARGV: session, reason
  -- A session past its deadline is released for what ended it, and held nothing at `now`.
  local r = live_of(ARGV[3], now)
  if not r then return answer({ kind = 'none' }) end
  release(r, ARGV[4], now)
  return answer({ kind = 'released', seat = r })

elseif op == 'end' then
  -- ARGV: grace ms, by, ids...
  local grace, by = tonumber(ARGV[3]), ARGV[4]
  local out = {}
  for i = 5, #ARGV do
    local id = ARGV[i]
    local r = load(id)
    if not r then
      table.insert(out, { id, gone_outcome(id, now), 0 })
    elseif expiry(r, now) then
      expire(r, now)
      table.insert(out, { id, gone_outcome(id, now), 0 })
    elseif r.state == 'ending' or ends(r) then
      table.insert(out, { id, 'already_ended', 0 })
    else
      r.ended_by = by
      if grace == 0 or r.state == 'paused' then
        release(r, 'ended', now)
        table.insert(out, { id, 'ending', now })
      else
        -- An uncounted session keeps its state: `ending` would count it.
        if not uncounted(r) then r.state = 'ending' end
        r.ending_at = now + grace
        put_seat(r)
        table.insert(out, { id, 'ending', r.ending_at })
      end
    end
  end
  return answer({ kind = 'ended', out = out })

elseif op == 'pause' or op == 'resume' then
  local id = ARGV[3]
  local r = load(id)
  if not r then return answer({ kind = 'not_found' }) end
  if expiry(r, now) then
    expire(r, now)
    return answer({ kind = 'not_found' })
  end
  if op == 'pause' then
    if r.state ~= 'active' and r.state ~= 'standby' then return answer({ kind = 'wrong_state' }) end
    if r.overflow then
      -- Its overflow time ends here; a resume is admitted within capacity.
      redis.call('HINCRBY', STATS, 'overflow_ms', overflow_used(r, now))
      r.overflow = false
    end
    r.state = 'paused'
    save(r)
    if redis.call('ZREM', Z, id) == 1 then ix_seat_out(r) end
    redis.call('ZADD', PAUSED, deadline(r), id)
    promote_overflow(now)
    count_release(now)
    table.insert(released, { seat = r, reason = 'paused' })
    return answer({ kind = 'done' })
  end
  if r.state ~= 'paused' then return answer({ kind = 'wrong_state' }) end
  purge(now)
  local a = admit(holders(now, str(r.user)), str(r.user), now, nil)
  if a.kind == 'full' then
    redis.call('HINCRBY', STATS, 'denied', 1)
    return answer({ kind = 'full' })
  end
  r.state = 'active'
  r.last_activity = now
  redis.call('ZREM', PAUSED, id)
  put_seat(r)
  bump_peak(redis.call('ZCARD', Z) + redis.call('ZCARD', PEND))
  return answer({ kind = 'done', resumed = r })

elseif op == 'activity' then
  -- ARGV: (seat id, age ms, 'a' activity | 'r' a request that was not)...: batched touches.
  -- Only seats that still hold are refreshed: an expired or ended seat is never revived by a
  -- late flush.
  local n = 0
  for i = 3, #ARGV, 3 do
    local id, age, kind = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local score = redis.call('ZSCORE', Z, id) or redis.call('ZSCORE', UNC, id)
    if score and tonumber(score) > now then
      local r = load(id)
      local t = now - age
      if r and r.state ~= 'paused' then
        local changed = false
        if t > (tonumber(r.last_request) or 0) then
          r.last_request = t
          changed = true
        end
        if kind == 'a' and t > r.last_activity then
          r.last_activity = t
          if r.state == 'standby' then r.state = 'active' end
          changed = true
        end
        if changed then
          put_seat(r)
          n = n + 1
        end
      end
    end
  end
  return answer({ kind = 'ok', n = n })

elseif op == 'uncounted' then
  -- ARGV: session, user, device, client, new seat id, state (exempt | named)
  local session = ARGV[3]
  local have = live_of(session, now)
  if have then return answer({ kind = 'seat', id = have.id, epoch = epoch() }) end
  local r = { id = ARGV[7], user = ARGV[4], device = ARGV[5], client = ARGV[6], session = session,
    started_at = now, last_activity = now, last_heartbeat = 0, last_request = now, last_input = 0, state = ARGV[8], ending_at = 0,
    overflow = false, ended_by = '' }
  put_seat(r)
  redis.call('HSET', SESS, session, r.id)
  redis.call('HDEL', GONE, session)
  redis.call('ZREM', GONEZ, session)
  return answer({ kind = 'seat', id = r.id, epoch = epoch() })

elseif op == 'rekey' then
  -- ARGV: old session, new session. The seat moves, `old` is refused from then on; when
  -- `new` leads to a live session of its own, that one stays and `old`'s is replaced.
  local old, new = ARGV[3], ARGV[4]
  local r = live_of(old, now)
  if not r then return answer({ kind = 'none' }) end
  if old == new then return answer({ kind = 'seat', id = r.id }) end
  local other = live_of(new, now)
  if other then
    release(r, 'replaced', now)
    return answer({ kind = 'seat', id = other.id })
  end
  r.session = new
  save(r)
  redis.call('HDEL', SESS, old)
  redis.call('HSET', SESS, new, r.id)
  redis.call('HSET', GONE, old, 'replaced')
  redis.call('ZADD', GONEZ, now + spec.max_lifetime, old)
  redis.call('HDEL', GONE, new)
  redis.call('ZREM', GONEZ, new)
  return answer({ kind = 'seat', id = r.id, epoch = epoch() })

elseif op == 'has' then
  -- ARGV: session. The live session it leads to (one past its deadline is released).
  local r = live_of(ARGV[3], now)
  if r then return answer({ kind = 'seat', id = r.id }) end
  return answer({ kind = 'none' })

elseif op == 'forget' then
  -- ARGV: session. It is live in another pool now: what this pool remembers of it is old.
  redis.call('HDEL', GONE, ARGV[3])
  redis.call('ZREM', GONEZ, ARGV[3])
  return answer({ kind = 'ok' })

elseif op == 'lookup' then
  -- ARGV: seat id. Read only; `ended` exactly when `end` would say already_ended.
  local id = ARGV[3]
  local r = load(id)
  if r then
    local why = expiry(r, now)
    if why == nil then return answer({ kind = 'live', seat = r, now = now }) end
    if why == 'ended' then return answer({ kind = 'ended' }) end
    return answer({ kind = 'unknown' })
  end
  if gone_outcome(id, now) == 'already_ended' then return answer({ kind = 'ended' }) end
  return answer({ kind = 'unknown' })

elseif op == 'view' then
  -- What `available()` answers from: seats and counting leases that hold at `now`, the waiting
  -- tickets that keep newcomers back (a newcomer's login is refused while any waits); and what
  -- `wait_estimate` reads (the earliest seat deadlines, the last hour's releases).
  local releases, since = rate_inputs(now)
  return answer({ kind = 'view', now = now, capacity = capacity(now),
    held = redis.call('ZCOUNT', Z, '(' .. now, '+inf') + redis.call('ZCOUNT', PEND, '(' .. now, '+inf'),
    earliest = earliest(now), releases = releases, since = since, waiting = q_holding_back(now),
    epoch = epoch() })

elseif op == 'list' then
  local pending = redis.call('ZCOUNT', PEND, '(' .. now, '+inf')
  local st = redis.call('HMGET', STATS, 'peak', 'denied', 'overflow_ms')
  local releases, since = rate_inputs(now)
  return cjson.encode({ kind = 'list', now = now, seats = redis.call('HVALS', SEATS), pending = pending,
    peak = tonumber(st[1] or '0'), denied = tonumber(st[2] or '0'), overflow_ms = tonumber(st[3] or '0'),
    queue_length = q_length(now), waiting = q_holding_back(now), earliest = earliest(now),
    releases = releases, since = since })

elseif op == 'sweep' then
  purge(now)
  -- The sweep runs on every replica every few seconds: the indexes are checked through in
  -- ZCARD / 256 sweeps.
  if IX and not REBUILDING and not index_sound(256) then drifted(now) end
  for _, idx in ipairs({ PAUSED, UNC }) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', now)) do
      local r = load(id)
      if r then expire(r, now) else redis.call('ZREM', idx, id) end
    end
  end
  -- Overflow seats stop when the allowance is spent, with the notice of an admin end.
  local allowance = str(spec.overflow_ms)
  if allowance and overflow_left(now) <= 0 then
    for _, o in ipairs(overflow_seats()) do
      local r = load(o.id)
      if r and r.overflow and expiry(r, now) == nil then
        r.ended_by = 'overflow'
        release(r, 'ended', now)
      end
    end
    -- They stop at the sweep after the allowance ran out; what they ran past it is not charged.
    if tonumber(redis.call('HGET', STATS, 'overflow_ms') or '0') > allowance then
      redis.call('HSET', STATS, 'overflow_ms', allowance)
    end
  end
  -- The line: lapsed tickets leave; barging off, a seat freed meanwhile is held for the head
  -- even when nobody polls or logs in.
  q_reap(now)
  if Q and not Q.barging then q_promote(now) end
  local old = redis.call('ZRANGEBYSCORE', GONEZ, '-inf', now)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', GONEZ, '-inf', now)
    redis.call('HDEL', GONE, unpack(old))
  end
  redis.call('ZREMRANGEBYSCORE', ENDED, '-inf', now)
  return answer({ kind = 'ok' })

elseif op == 'enqueue' then
  -- ARGV: ticket, its lease id, user, client, new public id
  local tk, lease, user, client, new_id = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  if not Q then return answer({ kind = 'line_full' }) end
  purge(now)
  q_reap(now)
  local t = q_load(tk)
  if t then
    -- Already in line: its place is kept, its poll time refreshed.
    q_heard(t, now)
  else
    t = { id = new_id, key = tk, lease = lease, user = user, client = client, joined_at = now,
      last_poll = now, polled_at = 0, state = 'waiting', ready_until = 0 }
    local length = redis.call('ZCARD', QZ)
    if length >= Q.max_length then
      q_event(t, 'left', 'line_full', now, length + 1)
      return answer({ kind = 'line_full' })
    end
    local seq = redis.call('HINCRBY', STATS, 'qseq', 1)
    q_save(t)
    redis.call('ZADD', QZ, seq, tk)
    redis.call('ZADD', QWAIT, seq, tk)
    redis.call('ZADD', QPOLL, now, tk)
    redis.call('ZADD', QJOIN, now, tk)
    redis.call('HSET', QID, new_id, tk)
    q_event(t, 'joined', nil, now)
  end
  q_promote(now)
  return answer({ kind = 'queued', status = q_status(q_load(tk), now), now = now })

elseif op == 'poll' then
  -- ARGV: ticket, the shortest interval between polls (ms)
  local tk, min = ARGV[3], tonumber(ARGV[4])
  purge(now)
  q_reap(now)
  local t = q_load(tk)
  if not t then return answer({ kind = 'unknown' }) end
  -- Joining is not polling: the first poll may come at once.
  local polled = tonumber(t.polled_at) or 0
  if polled > 0 and now < polled + min then
    return answer({ kind = 'too_soon', retry_after = math.min(min, polled + min - now) })
  end
  t.polled_at = now
  q_heard(t, now)
  q_promote(now)
  return answer({ kind = 'queued', status = q_status(q_load(tk), now), now = now })

elseif op == 'admitted' or op == 'unticket' then
  -- ARGV: admitted: ticket; unticket: public id (an admin removes it). A ticket whose time
  -- is up left already, whoever asks.
  purge(now)
  q_reap(now)
  local tk = ARGV[3]
  if op == 'unticket' then tk = redis.call('HGET', QID, ARGV[3]) end
  local t = tk and q_load(tk)
  if not t then
    if tk and op == 'unticket' then redis.call('HDEL', QID, ARGV[3]) end
    return answer({ kind = 'none' })
  end
  local told
  if op == 'admitted' then
    told = q_leave(t, 'admitted', now)
  else
    told = q_leave(t, 'removed', now)
    -- A ready ticket's seat goes to the next in line, whatever `barging` says.
    q_promote(now)
  end
  return answer({ kind = 'ticket', ticket = told })

elseif op == 'line' then
  -- Read only: the line in order, lapsed tickets left out.
  local out = {}
  local tks = redis.call('ZRANGE', QZ, 0, -1)
  for k = 1, #tks, 1000 do
    local part = {}
    for j = k, math.min(k + 999, #tks) do part[#part + 1] = tks[j] end
    for _, raw in ipairs(redis.call('HMGET', QT, unpack(part))) do
      if raw then
        local t = cjson.decode(raw)
        if not q_lapse(t, now) then table.insert(out, q_told(t, #out + 1)) end
      end
    end
  end
  return cjson.encode({ kind = 'line', now = now, tickets = out })

elseif op == 'rules' then
  -- Test hook: the pure rules on given inputs, so tests can check they agree with Rust.
  -- ARGV: case JSON {users, user, now, overflow_left, seat}
  local c = cjson.decode(ARGV[3])
  local users = new_counts(str(c.user))
  for _, u in ipairs(c.users) do users.add(str(u) or false) end
  local ol = c.overflow_left
  if ol == cjson.null then ol = nil end
  local a = admit(users, str(c.user), c.now, ol)
  local out = { admit = a }
  if c.seat then
    out.expiry = expiry(c.seat, c.now) or ''
    out.deadline = deadline(c.seat)
  end
  return cjson.encode(out)
end
return redis.error_reply('unknown op ' .. tostring(op))
