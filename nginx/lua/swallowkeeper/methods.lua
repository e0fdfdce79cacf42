-- swallowkeeper.methods: nginx's balancing methods other than round robin,
-- for swallowkeeper.dyups' balancer, ported from nginx 1.24:
--
--   least_conn         ngx_http_upstream_least_conn_module
--   ip_hash            ngx_http_upstream_ip_hash_module
--   hash KEY           ngx_http_upstream_hash_module (Cache::Memcached)
--   hash KEY consistent  the same module's ketama ring: 160 points per
--                      weight unit, crc32 of "host\0port" + previous point
--                      (a weight above 10 counts as 10: see
--                      ring_weights)
--
-- Same inputs as nginx, same choice: peers in the order of the body, the
-- same weights (down peers included in the total, as nginx counts them),
-- the same 20 attempts before falling back to round robin. Like nginx
-- without a `zone`, connection counts and health are per worker.
--
-- A peer (see dyups.lua build()) has name, weight, max_fails,
-- fail_timeout, down, fails, checked, current_weight, effective_weight.
-- The request state `st` carries tried (peer -> true) and the method's
-- progress (hash, tries) across retries of one request.

local ngx = ngx
local byte, sub, find, char, concat = string.byte, string.sub, string.find,
    string.char, table.concat
local floor, tonumber, sort, type = math.floor, tonumber, table.sort, type
local crc32 = ngx.crc32_long
local ffi_cast = require("ffi").cast
local get_request = require("resty.core.base").get_request

local _M = {}

-- Connections in flight, per worker: conns[upstream key][peer name]. Kept
-- apart from the peers so that a rebuilt upstream (a POST) keeps counting
-- the requests that were sent before it.
local conns = {}

-- ---------------------------------------------------------------------
-- The method of a record
-- ---------------------------------------------------------------------

-- compile_key splits a hash key ("$host:$cookie_x") into literal strings
-- and variable references ({ var = "host" }, { var = 1 } for $1).
-- parse.lua has checked its syntax.
local function compile_key(key)
    local parts, i, n = {}, 1, #key
    while i <= n do
        local d = find(key, "$", i, true)
        if not d then
            parts[#parts + 1] = sub(key, i)
            break
        end
        if d > i then
            parts[#parts + 1] = sub(key, i, d - 1)
        end
        local name, e = key:match("^{([%w_]+)}()", d + 1)
        if not name then
            name, e = key:match("^([1-9])()", d + 1)
            if name then
                name = tonumber(name)
            else
                name, e = key:match("^([%w_]+)()", d + 1)
            end
        end
        parts[#parts + 1] = { var = name }
        i = e
    end
    return parts
end

-- spec reads the method text stored with an upstream ("", "least_conn",
-- "ip_hash", "hash $x consistent", "random two"). nil means round robin:
-- also for `random`, which is stored but not enforced (nginx/README.md).
function _M.spec(text)
    if text == nil or text == "" then
        return nil
    end
    if text == "least_conn" or text == "ip_hash" then
        return { kind = text }
    end
    local key, rest = text:match("^hash%s+(%S+)%s*(%S*)$")
    if key then
        return { kind = "hash", key = compile_key(key), consistent = rest == "consistent" }
    end
    return nil
end

-- ---------------------------------------------------------------------
-- Shared pieces
-- ---------------------------------------------------------------------

-- failed says whether p sits out its fail_timeout after max_fails
-- failures (ngx_http_upstream_get_peer's test, in every method).
local function failed(p, now)
    return p.max_fails > 0 and p.fails >= p.max_fails and now - p.checked <= p.fail_timeout
end
_M.failed = failed

-- available says whether p may take this request: not tried by it yet, not
-- down, not failed.
local function available(st, p, now)
    return not st.tried[p] and not p.down and not failed(p, now)
end

-- weigh is one peer's step of smooth weighted round robin: its current
-- weight grows by its effective weight, which recovers by one towards its
-- weight after failures lowered it. Returns total plus the effective weight.
local function weigh(p, total)
    p.current_weight = p.current_weight + p.effective_weight
    total = total + p.effective_weight
    if p.effective_weight < p.weight then
        p.effective_weight = p.effective_weight + 1
    end
    return total
end

-- MAX_TRIES is how many picks the hash methods try before they fall back
-- to round robin, as nginx does.
local MAX_TRIES = 20

-- gave_up counts one more missed pick and says whether the method should
-- now fall back to round robin.
local function gave_up(st)
    st.tries = st.tries + 1
    return st.tries > MAX_TRIES
end

-- take marks p as this request's pick the way nginx does after any method.
local function take(st, p, now)
    if now - p.checked > p.fail_timeout then
        p.checked = now
    end
    st.tried[p] = true
    return p
end
_M.take = take

-- smooth is the smooth weighted round robin of ngx_http_upstream_get_peer
-- over peers[from..#peers] this request may use and, when cn is given,
-- only those holding bc connections per weight bw (least_conn's
-- tie-break): each one's current weight grows, the highest wins and gives
-- up the total. Returns the winner, not yet taken, or nil.
local function smooth(st, peers, from, now, cn, bc, bw)
    local best, total = nil, 0
    for i = from, #peers do
        local p = peers[i]
        if available(st, p, now) and (not cn or (cn[p.name] or 0) * bw == bc * p.weight) then
            total = weigh(p, total)
            if not best or p.current_weight > best.current_weight then
                best = p
            end
        end
    end
    if best then
        best.current_weight = best.current_weight - total
    end
    return best
end
_M.smooth = smooth

-- total_weight is peers->total_weight: every primary peer, down or not.
local function total_weight(peers)
    if not peers.total_weight then
        local w = 0
        for i = 1, #peers do
            w = w + peers[i].weight
        end
        peers.total_weight = w
    end
    return peers.total_weight
end

-- by_weight is the walk both hash modules share: the peer that owns
-- position w of the weight line.
local function by_weight(peers, w)
    local i = 1
    while w >= peers[i].weight do
        w = w - peers[i].weight
        i = i + 1
    end
    return peers[i]
end

local function eval_key(parts)
    local out = {}
    for i = 1, #parts do
        local p = parts[i]
        if type(p) == "string" then
            out[i] = p
        else
            out[i] = ngx.var[p.var] or ""
        end
    end
    return concat(out)
end

-- ---------------------------------------------------------------------
-- least_conn
-- ---------------------------------------------------------------------

-- least_conn is ngx_http_upstream_get_least_conn_peer over one peer set:
-- the fewest connections relative to weight; ties by smooth weighted
-- round robin among the tied peers.
function _M.least_conn(st, peers, now)
    local cn = conns[st.key] or {}
    local best, many, bi = nil, false, 0
    for i = 1, #peers do
        local p = peers[i]
        if available(st, p, now) then
            local c = cn[p.name] or 0
            if not best then
                best, bi, many = p, i, false
            else
                local bc = cn[best.name] or 0
                if c * best.weight < bc * p.weight then
                    best, bi, many = p, i, false
                elseif c * best.weight == bc * p.weight then
                    many = true
                end
            end
        end
    end
    if not best then
        return nil
    end
    if many then
        best = smooth(st, peers, bi, now, cn, cn[best.name] or 0, best.weight)
    end
    return take(st, best, now)
end

local function acquire(key, name)
    local cn = conns[key]
    if not cn then
        cn = {}
        conns[key] = cn
    end
    cn[name] = (cn[name] or 0) + 1
end

local function release(key, name)
    local cn = conns[key]
    local c = cn and cn[name]
    if c then
        if c <= 1 then
            cn[name] = nil
        else
            cn[name] = c - 1
        end
    end
end

-- The connection each request holds for least_conn, per worker:
-- holds[request] = { key, name }, at most one per request (a new try
-- releases the previous one). A request is keyed by its ngx_http_request_t
-- address, which an internal redirect keeps -- `error_page 502 =
-- @fallback` clears ngx.ctx, so a count kept there would leak -- and
-- which each subrequest has of its own (a subrequest shares its parent's
-- $request_id); a later request at the same address releases whatever
-- an ended one left there. ctxs[request] weakly holds the ngx.ctx of the
-- request's try: once it is collected, that try is over (the request
-- ended, or was redirected) whatever the log phase did, and sweep_holds
-- releases it.
local holds, nholds = {}, 0
local ctxs = setmetatable({}, { __mode = "v" })

local function request_key()
    local r = get_request()
    return r and tonumber(ffi_cast("uintptr_t", r))
end

local function drop(rk)
    local h = holds[rk]
    if h then
        holds[rk], ctxs[rk] = nil, nil
        nholds = nholds - 1
        release(h.key, h.name)
    end
end

-- hold counts p as the connection of the current request's try, in
-- upstream key, after releasing the request's previous one; ctx is the
-- request's ngx.ctx.
function _M.hold(key, p, ctx)
    local rk = request_key()
    if not rk then
        return
    end
    drop(rk)
    acquire(key, p.name)
    holds[rk] = { key = key, name = p.name }
    ctxs[rk] = ctx
    nholds = nholds + 1
end

-- unhold releases the current request's connection, if it holds one:
-- balance() calls it before each try (a retry, or the first try after an
-- internal redirect), log() at the end.
function _M.unhold()
    if nholds == 0 then
        return
    end
    local rk = request_key()
    if rk then
        drop(rk)
    end
end

-- held is how many connections this worker counts now (diagnostics).
function _M.held()
    return nholds
end

-- sweep_holds releases the holds whose try is over without log() having
-- run (a location without log_by_lua): its ngx.ctx was collected. Returns
-- how many it released.
function _M.sweep_holds()
    local n = 0
    for rk in pairs(holds) do
        if ctxs[rk] == nil then
            drop(rk)
            n = n + 1
        end
    end
    return n
end

-- ---------------------------------------------------------------------
-- ip_hash
-- ---------------------------------------------------------------------

-- nginx hashes the first 3 octets of an IPv4 client, all 16 of an IPv6
-- one, and 3 zero bytes for anything else (unix sockets).
local PSEUDO = "\0\0\0"

-- ip_hash is ngx_http_upstream_get_ip_hash_peer: nil, true asks for round
-- robin (after 20 attempts, or with fewer than two peers).
function _M.ip_hash(st, peers, now)
    if not st.addr then
        local a = ngx.var.binary_remote_addr or ""
        if #a == 4 then
            a = sub(a, 1, 3)
        elseif #a ~= 16 then
            a = PSEUDO
        end
        st.addr, st.hash, st.tries = a, 89, 0
    end
    if st.tries > MAX_TRIES or #peers < 2 then
        return nil, true
    end
    local addr, hash, tw = st.addr, st.hash, total_weight(peers)
    while true do
        for i = 1, #addr do
            hash = (hash * 113 + byte(addr, i)) % 6271
        end
        local p = by_weight(peers, hash % tw)
        if available(st, p, now) then
            st.hash = hash
            return take(st, p, now)
        end
        if gave_up(st) then
            st.hash = hash
            return nil, true
        end
    end
end

-- ---------------------------------------------------------------------
-- hash KEY
-- ---------------------------------------------------------------------

-- hash is ngx_http_upstream_get_hash_peer: Cache::Memcached's
-- ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH, REHASH omitted the
-- first time.
function _M.hash(st, peers, now, parts)
    if not st.key_text then
        st.key_text, st.hash, st.rehash, st.tries = eval_key(parts), 0, 0, 0
    end
    if st.tries > MAX_TRIES or #peers < 2 or st.key_text == "" then
        return nil, true
    end
    local tw = total_weight(peers)
    while true do
        local h
        if st.rehash > 0 then
            h = crc32(st.rehash .. st.key_text)
        else
            h = crc32(st.key_text)
        end
        st.hash = st.hash + floor(h / 65536) % 32768
        st.rehash = st.rehash + 1
        local p = by_weight(peers, st.hash % tw)
        if available(st, p, now) then
            return take(st, p, now)
        end
        if gave_up(st) then
            return nil, true
        end
    end
end

-- ---------------------------------------------------------------------
-- hash KEY consistent
-- ---------------------------------------------------------------------

local TWO20 = 1048576 -- a point packs hash * 2^20 + peer index in a double

-- le32 is the 4 bytes of a 32-bit value as a little-endian host stores it
-- (nginx feeds prev_hash.byte to crc32).
local function le32(v)
    return char(v % 256, floor(v / 256) % 256, floor(v / 65536) % 256, floor(v / 16777216) % 256)
end

-- RING_MAX_WEIGHT bounds each peer's weight on a ring (RING_MAX_WEIGHT *
-- 160 points a peer at most): nginx builds its ring in C at configuration
-- time, this one is built in Lua on a request, blocking the worker, about
-- a microsecond a point. Weights come from the registry (up to 10000): two
-- servers of weight 10000 would be 3.2 million points, seconds of a
-- blocked worker. The bound is per peer, as the daemon's own
-- (upstream.RingMaxWeight, applied before it sends a body): a peer's
-- points depend on that peer alone, so a peer joining or leaving moves
-- only its own keys.
local RING_MAX_WEIGHT = 10

-- ring_weights is the weight of each peer on the ring: nginx's weight, or
-- RING_MAX_WEIGHT above it. A ring with every weight at most
-- RING_MAX_WEIGHT (all the daemon sends) is nginx's.
local function ring_weights(peers)
    local out = {}
    for i = 1, #peers do
        local w = peers[i].weight
        if w > RING_MAX_WEIGHT then
            w = RING_MAX_WEIGHT
        end
        out[i] = w
    end
    return out
end

-- ring is ngx_http_upstream_update_chash: weight * 160 points per peer
-- (weights bounded by ring_weights), from crc32 over host, a NUL, port and
-- the previous point's 4 bytes; sorted, equal hashes kept once (the first
-- peer's). Built once per upstream revision and worker, on the first
-- request that needs it.
local function ring(peers)
    if peers.ring then
        return peers.ring
    end
    local weights = ring_weights(peers)
    local packed = {}
    for i = 1, #peers do
        local name = peers[i].name
        local host, port
        if sub(name, 1, 5):lower() == "unix:" then
            host, port = sub(name, 6), ""
        else
            host, port = name:match("^(.*):(%d*)$")
            if not host then
                host, port = name, ""
            end
        end
        local base = host .. "\0" .. port
        local prev = 0
        for _ = 1, weights[i] * 160 do
            local h = crc32(base .. le32(prev))
            packed[#packed + 1] = h * TWO20 + i
            prev = h
        end
    end
    sort(packed)
    local hashes, owners, last = {}, {}, nil
    for j = 1, #packed do
        local v = packed[j]
        local h = floor(v / TWO20)
        if h ~= last then
            hashes[#hashes + 1] = h
            owners[#owners + 1] = peers[v - h * TWO20]
            last = h
        end
    end
    peers.ring = { hashes = hashes, owners = owners }
    return peers.ring
end

-- find_point is ngx_http_upstream_find_chash_point: how many points hash
-- below h (so the first point at or above h, 0-based).
local function find_point(hashes, h)
    local lo, hi = 1, #hashes + 1
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if hashes[mid] < h then
            lo = mid + 1
        else
            hi = mid
        end
    end
    return lo - 1
end

-- chash is ngx_http_upstream_get_chash_peer: from the key's point, walk
-- the ring to the first point whose peer may take the request.
function _M.chash(st, peers, now, parts)
    if not st.key_text then
        st.key_text, st.tries = eval_key(parts), 0
        if st.key_text ~= "" and #peers >= 2 then
            st.hash = find_point(ring(peers).hashes, crc32(st.key_text))
        end
    end
    if st.tries > MAX_TRIES or #peers < 2 or st.key_text == "" then
        return nil, true
    end
    local r = ring(peers)
    local n = #r.owners
    while true do
        local p = r.owners[st.hash % n + 1]
        -- nginx runs round robin among the peers of the point's server
        -- name (one name may resolve to several addresses); here a name
        -- is one peer.
        if available(st, p, now) then
            return take(st, p, now)
        end
        st.hash = st.hash + 1
        if gave_up(st) then
            return nil, true
        end
    end
end

return _M
