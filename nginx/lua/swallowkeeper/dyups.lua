-- swallowkeeper.dyups: the ngx_http_dyups_module REST API and dynamic
-- upstreams for stock nginx + lua-nginx-module (or OpenResty).
--
--   api()          content_by_lua handler answering GET /list, GET /detail,
--                  GET|POST|DELETE /upstream/NAME exactly as dyups does.
--   balance()      balancer_by_lua handler: routes to the upstream named by
--                  an nginx variable (default $sk_upstream) with nginx's
--                  smooth weighted round robin, backups and passive health,
--                  or the upstream's least_conn / ip_hash / hash method
--                  (swallowkeeper.methods).
--   log()          optional log_by_lua handler: tells the balancer whether
--                  the last peer of a request worked (resets failure counts
--                  the way nginx does on success).
--   init(opts)     init_by_lua: binds the shared dict; on a fresh dict loads
--                  the file SwallowKeeper persists; reads the API secret.
--   init_worker()  init_worker_by_lua: per-worker housekeeping.
--
-- State lives in a lua_shared_dict, so every worker shares it and it
-- survives `nginx -s reload`. Workers keep a parsed copy per upstream and
-- check one version counter in the dict on every request, so a change is
-- seen by every worker on its very next request (real dyups lags up to one
-- dyups_read_msg_timeout behind in the workers that did not serve the POST).
--
-- Shared dict keys:
--   sk:format    record format of this module; absent means "never loaded"
--   sk:version   incremented on every change, the workers' cheap check
--   sk:seq       source of revisions (also the /list order)
--   r:<name>     the upstream's current revision, name lowercased: the
--                pointer to its record, and a worker's cheap way to tell
--                whether *its* upstream changed
--   u:<rev>      one upstream record (see encode), holding its display name
--
-- A write never touches the record in use: the new record goes in under a
-- new revision, then the pointer moves to it (a number replaced by a number,
-- in place: it cannot run out of memory), then the old record is freed. So
-- a full dict refuses a POST and keeps the old upstream, and a reader that
-- follows the pointer always finds a whole record (or, if it loses a race
-- with a write, reads the pointer again).

local parse = require "swallowkeeper.parse"
local methods = require "swallowkeeper.methods"
local balancer = require "ngx.balancer"

local ngx = ngx
local log, ERR, WARN, NOTICE, INFO = ngx.log, ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO
local byte, sub, find, lower, match, fmt, concat =
    string.byte, string.sub, string.find, string.lower, string.match,
    string.format, table.concat
local sort, tonumber, tostring, ipairs, pairs, type, error, floor, io_open =
    table.sort, tonumber, tostring, ipairs, pairs, type, error, math.floor, io.open
local gsub = string.gsub
local bit = require "bit"
local bor, bxor = bit.bor, bit.bxor

local _M = { _VERSION = "1.0" }

-- Bump when the record layout changes: init() then reloads from the
-- persisted file instead of misreading records left by an older module
-- across a reload.
local FORMAT = "2"

local K_FORMAT, K_VERSION, K_SEQ = "sk:format", "sk:version", "sk:seq"
local P_UPS, P_REV = "u:", "r:"

-- ngx_balancer has no "no live upstreams" API; returning NGX_BUSY from the
-- balancer makes nginx log "no live upstreams" and answer 502, exactly as
-- when every server of a static upstream is down. (ngx.exit(502) would give
-- 500 on stock nginx.)
local NGX_BUSY = -3

local CTX_KEY = "swallowkeeper"

-- Upstream names: SwallowKeeper's alphabet (internal/upstream ValidName).
-- dyups takes any bytes, so a name with a newline could add lines to /list
-- and /detail; these names are refused instead.
local MAX_NAME = 200
local NAME_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]* of at most 200 bytes"

-- The header that carries the API secret (init option secret_file).
local SECRET_HEADER = "x-swallowkeeper-secret"
-- The header that tells a client why a write failed where dyups' body
-- cannot ("add server failed" covers every refusal).
local ERROR_HEADER = "X-SwallowKeeper-Error"
local FULL = "shared dict full"

local conf -- set by init(): { dict, dict_name, var, persisted_file,
           --                  allow_unix, secret_hash }

local function valid_name(name)
    return #name >= 1 and #name <= MAX_NAME
        and find(name, "^[A-Za-z0-9][A-Za-z0-9_.%-]*$") ~= nil
end

-- printable makes a string safe for one line of error.log: control bytes,
-- bytes >= 0x80, quote and backslash become \xNN; long ones are cut.
local function printable(s)
    if #s > 256 then
        s = sub(s, 1, 256) .. "..."
    end
    return (gsub(s, '[%c\128-\255"\\]', function(c)
        return fmt("\\x%02X", byte(c))
    end))
end

-- ---------------------------------------------------------------------
-- Records
--
-- One upstream is stored as a flat list of length-prefixed strings
-- ("3:web"), so any byte may appear in a name or a unix socket path:
--   seq, display name, /upstream text, /detail text, keepalive, method,
--   peer count, then per peer: name, host, port, weight, max_fails,
--   fail_timeout, max_conns, backup, down
-- The API texts are rendered once at POST time: GETs then cost no parsing.
-- ---------------------------------------------------------------------

local PEER_FIELDS = 9
local HEAD_FIELDS = 7

local function encode(fields)
    local out = {}
    for i = 1, #fields do
        local s = fields[i]
        out[#out + 1] = #s
        out[#out + 1] = ":"
        out[#out + 1] = s
    end
    return concat(out)
end

local function decode(rec, max)
    local t, pos, n = {}, 1, #rec
    while pos <= n and (not max or #t < max) do
        local colon = find(rec, ":", pos, true)
        local len = tonumber(sub(rec, pos, colon - 1))
        t[#t + 1] = sub(rec, colon + 1, colon + len)
        pos = colon + len + 1
    end
    return t
end

local function render(seq, name, ups)
    local list, detail = {}, {}
    local fields = { tostring(seq), name, "", "", ups.keepalive or "",
                     ups.method or "", tostring(#ups.servers) }
    for _, s in ipairs(ups.servers) do
        list[#list + 1] = "server " .. s.name .. "\n"
        detail[#detail + 1] = fmt(
            "server %s weight=%s max_conns=%s max_fails=%s fail_timeout=%s backup=%d down=%d\n",
            s.name, s.weight, s.max_conns, s.max_fails, s.fail_timeout,
            s.backup and 1 or 0, s.down and 1 or 0)
        local f = #fields
        fields[f + 1] = s.name
        fields[f + 2] = s.host
        fields[f + 3] = s.port and tostring(s.port) or ""
        fields[f + 4] = tostring(s.weight_n)
        fields[f + 5] = tostring(s.max_fails_n)
        fields[f + 6] = tostring(s.fail_timeout_n)
        fields[f + 7] = tostring(s.max_conns_n)
        fields[f + 8] = s.backup and "1" or "0"
        fields[f + 9] = s.down and "1" or "0"
    end
    fields[3] = concat(list)
    fields[4] = concat(detail)
    return encode(fields)
end

-- ---------------------------------------------------------------------
-- Shared dict access
-- ---------------------------------------------------------------------

local function dict_error(err, need)
    if err == "no memory" then
        return fmt("%s: lua_shared_dict \"%s\" has no room for %d more bytes; "
                   .. "the old upstream stays (make the zone larger)",
                   FULL, conf.dict_name, need), true
    end
    return fmt("lua_shared_dict \"%s\": %s", conf.dict_name, err)
end

-- store writes one upstream: new record, then pointer, then free the old
-- record (see the top of this file). A failure leaves the dict as it was.
-- safe_add refuses to evict other upstreams when the zone is full (plain
-- set would, silently). Returns true, or nil, a message and whether the
-- dict was full.
local function store(dict, name, ups)
    local key = lower(name)
    local seq, err = dict:incr(K_SEQ, 1, 0)
    if not seq then
        return nil, "sequence: " .. err
    end
    local rec = render(seq, name, ups)

    local ok
    ok, err = dict:safe_add(P_UPS .. seq, rec)
    if not ok then
        return nil, dict_error(err, #rec)
    end
    local old = dict:get(P_REV .. key)
    ok, err = dict:safe_set(P_REV .. key, seq)
    if not ok then
        -- Only a new name needs memory for its pointer.
        dict:delete(P_UPS .. seq)
        return nil, dict_error(err, 64)
    end
    if old and old ~= seq then
        dict:delete(P_UPS .. old)
    end
    dict:incr(K_VERSION, 1, 0)
    return true
end

-- current returns the record and revision of upstream `key` (lowercased),
-- or nil. A write may free the record between the two reads; the pointer
-- then already names the new one, so read it again.
local function current(dict, key)
    for _ = 1, 3 do
        local rev = dict:get(P_REV .. key)
        if not rev then
            return nil
        end
        local rec = dict:get(P_UPS .. rev)
        if rec then
            return rec, rev
        end
    end
    return nil
end

-- records returns every stored upstream record, decoded up to `fields`
-- fields, in /list order (by revision: the last POST comes last).
local function records(dict, fields)
    local out = {}
    for _, k in ipairs(dict:get_keys(0)) do
        if sub(k, 1, 2) == P_REV then
            local rec = current(dict, sub(k, 3))
            if rec then
                local f = decode(rec, fields)
                f.seq = tonumber(f[1])
                out[#out + 1] = f
            end
        end
    end
    sort(out, function(a, b) return a.seq < b.seq end)
    return out
end

local function clear_upstreams(dict)
    for _, k in ipairs(dict:get_keys(0)) do
        local p = sub(k, 1, 2)
        if p == P_UPS or p == P_REV then
            dict:delete(k)
        end
    end
end

-- ---------------------------------------------------------------------
-- init
-- ---------------------------------------------------------------------

local function read_file(path)
    local f, err = io_open(path, "rb")
    if not f then
        return nil, err
    end
    local text
    text, err = f:read("*a")
    f:close()
    if not text then
        return nil, err
    end
    return text
end

-- glob lists the files a pattern matches, sorted, as nginx's own `include`
-- does (glob(3), through LuaJIT's FFI: Lua has no directory listing). The
-- pattern DIR/*.conf is SwallowKeeper's directory store, one file per
-- upstream; its temp files and spares start with a dot, which `*` does not
-- match.
local ffi_glob
local function glob(pattern)
    if not ffi_glob then
        local ffi = require "ffi"
        -- glibc's and musl's glob_t share this layout: the count and the
        -- list first, then room for five function pointers. pcall: another
        -- module may have declared glob already (then its declaration
        -- serves, or the call below fails and says so).
        pcall(ffi.cdef, [[
            typedef struct {
                size_t gl_pathc;
                char **gl_pathv;
                size_t gl_offs;
                int gl_flags;
                void *gl_fns[5];
            } sk_glob_t;
            int glob(const char *pattern, int flags, void *errfunc, sk_glob_t *pglob);
            void globfree(sk_glob_t *pglob);
        ]])
        ffi_glob = { ffi = ffi, GLOB_ERR = 1, GLOB_NOMATCH = 3 }
    end
    local ffi = ffi_glob.ffi
    local ok, g = pcall(ffi.new, "sk_glob_t[1]")
    if not ok then
        return nil, "cannot list " .. pattern .. ": " .. tostring(g)
    end
    local called, rc = pcall(function() return ffi.C.glob(pattern, ffi_glob.GLOB_ERR, nil, g) end)
    if not called then
        return nil, "cannot list " .. pattern .. ": " .. tostring(rc)
    end
    if rc == ffi_glob.GLOB_NOMATCH then
        ffi.C.globfree(g)
        return {}
    end
    if rc ~= 0 then
        ffi.C.globfree(g)
        return nil, "cannot list " .. pattern .. " (glob error " .. tostring(rc) .. ")"
    end
    local paths = {}
    for i = 0, tonumber(g[0].gl_pathc) - 1 do
        paths[#paths + 1] = ffi.string(g[0].gl_pathv[i])
    end
    ffi.C.globfree(g)
    sort(paths)
    return paths
end

-- read_persisted reads the persisted file, or for a directory store
-- (DIR/*.conf) every file in it, joined: each holds one upstream block.
local function read_persisted(path)
    if sub(path, -7) ~= "/*.conf" then
        return read_file(path)
    end
    local paths, err = glob(path)
    if not paths then
        -- A directory not created yet is a first start, as a missing
        -- file is; one that cannot be read is an error.
        local f, open_err = io_open(sub(path, 1, -8), "rb")
        if not f then
            return nil, open_err
        end
        f:close()
        return nil, err
    end
    local texts = {}
    for _, p in ipairs(paths) do
        local text
        text, err = read_file(p)
        if not text then
            return nil, p .. ": " .. tostring(err)
        end
        texts[#texts + 1] = text
    end
    return concat(texts, "\n")
end

-- load_persisted fills an empty dict from the file SwallowKeeper writes
-- (the one a dyups nginx would `include`), or the files of its directory
-- store. All or nothing: a corrupt file, or a zone too small for all of
-- it, loads no upstream at all, because a partial set would route traffic
-- for the missing services nowhere.
local function load_persisted(dict, path)
    local text, err = read_persisted(path)
    if not text then
        if find(err, "No such file", 1, true) then
            log(NOTICE, "swallowkeeper: persisted file ", path,
                " does not exist yet, starting with no upstreams")
        else
            log(ERR, "swallowkeeper: cannot read persisted file ", path, ": ", err,
                "; starting with no upstreams")
        end
        return
    end

    local list
    list, err = parse.parse_file(text)
    if not list then
        log(ERR, "swallowkeeper: persisted file ", path, " is corrupt: ", err,
            "; loaded no upstream")
        return
    end

    for _, u in ipairs(list) do
        if not valid_name(u.name) then
            log(ERR, "swallowkeeper: persisted file ", path, ": upstream \"", printable(u.name),
                "\": name is not ", NAME_RULE, "; loaded no upstream")
            clear_upstreams(dict)
            return
        end
        local ok
        ok, err = store(dict, u.name, u.upstream)
        if not ok then
            log(ERR, "swallowkeeper: persisted file ", path, ": upstream \"", u.name,
                "\": ", err, "; loaded no upstream")
            clear_upstreams(dict)
            return
        end
    end
    log(NOTICE, "swallowkeeper: loaded ", #list, " upstream(s) from ", path)
end

local OPTIONS = { dict = "string", var = "string", persisted_file = "string",
                  allow_unix_servers = "boolean", secret_file = "string",
                  sweep_interval = "number" }

-- read_secret reads the API secret (surrounding whitespace trimmed) and
-- returns its SHA-1: requests are checked against the digest, so the
-- comparison takes the same time whatever the secret's length. A missing,
-- unreadable or empty file is an error: nginx then refuses to start rather
-- than serve an API that was meant to be closed.
local function read_secret(path)
    local text, err = read_file(path)
    if not text then
        error("swallowkeeper: secret_file \"" .. path .. "\": " .. tostring(err), 3)
    end
    local secret = match(text, "^%s*(.-)%s*$")
    if secret == "" then
        error("swallowkeeper: secret_file \"" .. path .. "\" is empty", 3)
    end
    return ngx.sha1_bin(secret)
end

-- init(opts) must run in init_by_lua. Options:
--   dict            lua_shared_dict name (default "swallowkeeper")
--   var             nginx variable holding the upstream name to route to,
--                   without "$" (default "sk_upstream")
--   persisted_file  file to load when the dict is empty (first start, full
--                   restart); ignored on reload, when the dict already
--                   holds the live state. DIR/*.conf loads every file of
--                   SwallowKeeper's directory store (file: DIR/*.conf).
--   allow_unix_servers  accept `server unix:/path` in POST bodies (default
--                   false: a unix socket on this host -- the API's own, an
--                   admin socket -- must not become a backend of public
--                   traffic). The persisted file is trusted either way.
--   secret_file     file holding a shared secret (read here, in the master,
--                   so it may be readable by root only). Every API request
--                   must then carry it in X-SwallowKeeper-Secret, else 403
--                   "forbidden\n". Unset: no check.
--   sweep_interval  seconds between each worker's housekeeping runs
--                   (default 30): dropping copies of deleted upstreams,
--                   freeing records left by racing writes, releasing
--                   least_conn counts of requests that ended without log().
function _M.init(opts)
    opts = opts or {}
    for k, v in pairs(opts) do
        if OPTIONS[k] == nil then
            error("swallowkeeper: unknown option \"" .. tostring(k) .. "\"", 2)
        end
        if type(v) ~= OPTIONS[k] then
            error("swallowkeeper: option \"" .. k .. "\" must be a " .. OPTIONS[k], 2)
        end
    end

    local name = opts.dict or "swallowkeeper"
    local dict = ngx.shared[name]
    if not dict then
        error("swallowkeeper: lua_shared_dict \"" .. name .. "\" is not defined", 2)
    end
    local var = opts.var or "sk_upstream"
    if byte(var, 1) == 36 then -- tolerate "$sk_upstream"
        var = sub(var, 2)
    end
    conf = { dict = dict, dict_name = name, var = var,
             persisted_file = opts.persisted_file,
             allow_unix = opts.allow_unix_servers == true,
             sweep_interval = opts.sweep_interval or 30 }
    if not (conf.sweep_interval > 0) then
        error("swallowkeeper: option \"sweep_interval\" must be a positive number of seconds", 2)
    end
    if opts.secret_file then
        conf.secret_hash = read_secret(opts.secret_file)
    end

    -- Shared dicts survive a HUP reload: then the dict already holds the
    -- live state, which is newer than (or equal to) the file. Only a fresh
    -- zone -- first start, full restart, resized zone -- or records written
    -- by a different module version are (re)loaded from the file.
    if dict:get(K_FORMAT) == FORMAT then
        log(NOTICE, "swallowkeeper: keeping the upstreams held in lua_shared_dict \"",
            name, "\"")
        return
    end

    clear_upstreams(dict)
    if conf.persisted_file then
        load_persisted(dict, conf.persisted_file)
    end
    dict:set(K_FORMAT, FORMAT)
    dict:incr(K_VERSION, 1, 0)
end

-- ---------------------------------------------------------------------
-- Per-worker routing state
-- ---------------------------------------------------------------------

-- cache[lowercased name] = upstream built from the dict record:
--   { name, rev, version, primary = {peers}, backup = {peers}, tries, single }
-- Peers carry nginx's round-robin state (current and effective weight) and
-- passive health (fails, accessed, checked), all per worker like nginx.
local cache = {}

-- build turns a record into peers. Health state is carried over from the
-- previous build for peers whose address did not change, so re-posting an
-- upstream does not resurrect a server that just failed.
local function build(rec, old)
    local f = decode(rec)
    local ups = { name = f[2], keepalive = tonumber(f[5]), method = f[6],
                  balance = methods.spec(f[6]), primary = {}, backup = {}, tries = 0 }

    local prev = {}
    if old then
        for _, set in ipairs({ old.primary, old.backup }) do
            for _, p in ipairs(set) do
                prev[p.name] = p
            end
        end
    end

    local n = tonumber(f[HEAD_FIELDS])
    for i = 0, n - 1 do
        local b = HEAD_FIELDS + 1 + i * PEER_FIELDS
        local weight = tonumber(f[b + 3])
        local p = {
            name = f[b], host = f[b + 1], port = tonumber(f[b + 2]),
            weight = weight, max_fails = tonumber(f[b + 4]),
            fail_timeout = tonumber(f[b + 5]), max_conns = tonumber(f[b + 6]),
            down = f[b + 8] == "1",
            current_weight = 0, effective_weight = weight,
            fails = 0, accessed = 0, checked = 0,
        }
        local o = prev[p.name]
        if o then
            p.fails, p.accessed, p.checked = o.fails, o.accessed, o.checked
        end
        local set = f[b + 7] == "1" and ups.backup or ups.primary
        set[#set + 1] = p
        if not p.down then
            ups.tries = ups.tries + 1
        end
    end

    -- nginx skips the failure accounting for an upstream of exactly one
    -- server and no backup: there is nowhere else to go anyway.
    ups.single = #ups.primary == 1 and #ups.backup == 0
    return ups
end

-- lookup returns this worker's view of upstream `name`, refreshed if the
-- dict changed since it was built. Cost when nothing changed: one dict get.
local function lookup(name)
    local dict = conf.dict
    local key = lower(name)
    local version = dict:get(K_VERSION)
    local ups = cache[key]
    if ups and ups.version == version then
        return ups
    end

    local rev = dict:get(P_REV .. key)
    if not rev then
        cache[key] = nil
        return nil
    end
    if ups and ups.rev == rev then
        ups.version = version
        return ups
    end

    local rec
    rec, rev = current(dict, key)
    if not rec then
        cache[key] = nil
        return nil
    end
    ups = build(rec, ups)
    ups.rev, ups.version = rev, version
    cache[key] = ups
    return ups
end

-- peer_failed is ngx_http_upstream_free_round_robin_peer for a failed try,
-- plus one difference: without log() nginx-style "success resets the count"
-- never happens, so failures older than fail_timeout are forgotten here;
-- max_fails then counts failures within fail_timeout, as documented for
-- nginx.
local function peer_failed(p, upstream_name)
    local now = ngx.now()
    if p.fails > 0 and now - p.accessed > p.fail_timeout then
        p.fails = 0
    end
    p.fails = p.fails + 1
    p.accessed = now
    p.checked = now
    if p.max_fails > 0 then
        p.effective_weight = p.effective_weight - floor(p.weight / p.max_fails)
        if p.fails >= p.max_fails then
            log(WARN, "swallowkeeper: upstream \"", upstream_name, "\": server ", p.name,
                " temporarily disabled after ", p.fails, " failure(s)")
        end
    end
    if p.effective_weight < 0 then
        p.effective_weight = 0
    end
end

-- get_peer is ngx_http_upstream_get_peer: smooth weighted round robin over
-- the peers not yet tried by this request, not down and not in their
-- fail_timeout penalty.
local function get_peer(st, peers, now, single)
    if single then
        local p = peers[1]
        if p.down or st.tried[p] then
            return nil
        end
        st.tried[p] = true
        return p
    end
    local best = methods.smooth(st, peers, 1, now)
    return best and methods.take(st, best, now)
end

-- pick_method runs the upstream's balancing method: least_conn over the
-- primaries, then the backups (as nginx's least_conn does); ip_hash and
-- hash over the primaries only (nginx runs them without backups), falling
-- back to round robin where nginx does (want_rr).
local function pick_method(st, m, now)
    local ups = st.ups
    if m.kind == "least_conn" then
        if ups.single then -- as nginx: one server, no backup, no choice
            return nil, true
        end
        if not st.on_backup then
            local p = methods.least_conn(st, ups.primary, now)
            if p or #ups.backup == 0 then
                return p
            end
            st.on_backup = true
        end
        return methods.least_conn(st, ups.backup, now)
    end
    local p, want_rr
    if m.kind == "ip_hash" then
        p, want_rr = methods.ip_hash(st, ups.primary, now)
    elseif m.consistent then
        p, want_rr = methods.chash(st, ups.primary, now, m.key)
    else
        p, want_rr = methods.hash(st, ups.primary, now, m.key)
    end
    return p, want_rr
end

-- pick tries the primary servers, then -- for the rest of this request,
-- as nginx does -- the backup servers.
local function pick(st)
    local ups, now = st.ups, ngx.now()
    if ups.balance and not st.rr then
        local p, want_rr = pick_method(st, ups.balance, now)
        if not want_rr then
            return p
        end
        st.rr = true -- for the rest of this request, as nginx does
    end
    if not st.on_backup then
        local p = get_peer(st, ups.primary, now, ups.single)
        if p or #ups.backup == 0 then
            return p
        end
        st.on_backup = true
    end
    return get_peer(st, ups.backup, now, false)
end

-- ---------------------------------------------------------------------
-- balancer_by_lua
-- ---------------------------------------------------------------------

local function not_ready()
    log(ERR, "swallowkeeper: require(\"swallowkeeper.dyups\").init() was not called ",
        "in init_by_lua")
end

function _M.balance()
    if not conf then
        not_ready()
        return ngx.exit(NGX_BUSY)
    end

    local ctx = ngx.ctx
    local st = ctx[CTX_KEY]

    if not st then
        local name = ngx.var[conf.var]
        if not name or name == "" then
            log(ERR, "swallowkeeper: no upstream name in $", conf.var)
            return ngx.exit(NGX_BUSY)
        end
        local ups = lookup(name)
        if not ups then
            log(ERR, "swallowkeeper: upstream \"", name, "\" is not defined")
            return ngx.exit(NGX_BUSY)
        end
        st = { ups = ups, tried = {}, key = lower(name) }
        ctx[CTX_KEY] = st
        -- One try per usable server; nginx caps it at
        -- proxy_next_upstream_tries when that is set.
        if ups.tries > 1 then
            local ok, err = balancer.set_more_tries(ups.tries - 1)
            if not ok then
                log(ERR, "swallowkeeper: upstream \"", ups.name, "\": set_more_tries: ", err)
            end
        end
    elseif st.cur then
        -- A retry: nginx reports why the previous server was left. "next"
        -- (http_403/http_404 in proxy_next_upstream) is not a failure.
        local state = balancer.get_last_failure()
        if state == "failed" then
            peer_failed(st.cur, st.ups.name)
        end
    end
    methods.unhold() -- this request's previous try, if any, is over

    local p = pick(st)
    if not p then
        log(ERR, "swallowkeeper: no live upstreams in \"", st.ups.name, "\"")
        return ngx.exit(NGX_BUSY)
    end
    st.cur = p
    local m = st.ups.balance
    if m and m.kind == "least_conn" then -- only least_conn counts connections
        methods.hold(st.key, p, ctx)
    end

    local ok, err = balancer.set_current_peer(p.host, p.port)
    if not ok then
        log(ERR, "swallowkeeper: upstream \"", st.ups.name, "\": server ", p.name, ": ", err)
        return ngx.exit(NGX_BUSY)
    end
end

-- log() (log_by_lua, optional) reports how the request's last server did.
-- balance() only learns about failures that caused a retry; this adds the
-- final try: a 502/504 without any response header is a failed server
-- (nginx counts it), anything else is a success, which clears the failure
-- count the way ngx_http_upstream_free_round_robin_peer does.
function _M.log()
    -- Before the ctx check: after an internal redirect this location's
    -- ngx.ctx is new, yet the request may hold a connection of its try
    -- before the redirect.
    methods.unhold()
    local st = ngx.ctx[CTX_KEY]
    if not st or not st.cur then
        return
    end
    local p = st.cur
    local status = match(ngx.var.upstream_status or "", "(%d+)[^%d]*$")
    local header_time = match(ngx.var.upstream_header_time or "", "([^%s,:]+)[%s,:]*$")
    if (status == "502" or status == "504") and header_time == "-" then
        peer_failed(p, st.ups.name)
    elseif p.accessed < p.checked then
        p.fails = 0
    end
end

-- ---------------------------------------------------------------------
-- init_worker_by_lua
-- ---------------------------------------------------------------------

-- Records no pointer names: two writes of one upstream racing in two
-- workers can leave one behind (each frees the record it replaced). A
-- record is unnamed for a few microseconds while it is written, so only
-- one found unnamed by two sweeps in a row is freed.
local orphans = {}

local function collect_orphans(dict)
    local live, recs = {}, {}
    for _, k in ipairs(dict:get_keys(0)) do
        local p = sub(k, 1, 2)
        if p == P_REV then
            local rev = dict:get(k)
            if rev then
                live[tostring(rev)] = true
            end
        elseif p == P_UPS then
            recs[#recs + 1] = sub(k, 3)
        end
    end
    local seen = {}
    for _, rev in ipairs(recs) do
        if not live[rev] then
            if orphans[rev] then
                dict:delete(P_UPS .. rev)
                log(INFO, "swallowkeeper: freed unreferenced record of revision ", rev)
            else
                seen[rev] = true
            end
        end
    end
    orphans = seen
end

-- Drop cached upstreams that were deleted but are no longer requested
-- (lookup() drops the requested ones itself), free orphaned records, and
-- release least_conn counts of tries that ended without log().
local function sweep(premature)
    if premature or not conf then
        return
    end
    for key in pairs(cache) do
        if not conf.dict:get(P_REV .. key) then
            cache[key] = nil
        end
    end
    collect_orphans(conf.dict)
    local n = methods.sweep_holds()
    if n > 0 then
        log(WARN, "swallowkeeper: released ", n, " least_conn connection count(s) of requests ",
            "that ended without log(); wire log_by_lua_block { require(\"swallowkeeper.dyups\").log() } ",
            "where requests are proxied")
    end
end

function _M.init_worker()
    if not conf then
        not_ready()
        return
    end
    local ok, err = ngx.timer.every(conf.sweep_interval, sweep)
    if not ok then
        log(ERR, "swallowkeeper: cannot start the cache sweeper: ", err)
    end
end

-- ---------------------------------------------------------------------
-- content_by_lua: the dyups REST API
-- ---------------------------------------------------------------------

-- respond sends what ngx_http_dyups_send_response sends: the status, a
-- Content-Length (nginx drops it itself for 204) and the body, with no
-- Content-Type (dyups never sets one; clearing it stops default_type).
local function respond(status, body, reason)
    ngx.status = status
    ngx.header.content_type = nil
    if reason then
        ngx.header[ERROR_HEADER] = reason
    end
    if status ~= 204 then
        ngx.header["Content-Length"] = #body
    end
    if body ~= "" then
        ngx.print(body)
    else
        ngx.send_headers()
    end
    return ngx.exit(ngx.HTTP_OK)
end

-- split_path is ngx_dyups_parse_path: the URI after its first byte, split
-- on '/', a trailing '/' adding no empty segment.
local function split_path(uri)
    local res, p, last = {}, 2, #uri
    while p <= last do
        local e = find(uri, "/", p, true)
        local seg = e and sub(uri, p, e - 1) or sub(uri, p)
        res[#res + 1] = seg
        p = p + #seg + 1
    end
    return res
end

local function do_get(res)
    local dict = conf.dict
    if #res == 0 then
        -- dyups returns NGX_HTTP_NOT_FOUND here: nginx's own 404 page.
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    local what = lower(res[1])

    local body
    if what == "list" then
        local out = {}
        for _, f in ipairs(records(dict, 2)) do
            out[#out + 1] = f[2] .. "\n"
        end
        body = concat(out)
    elseif what == "detail" then
        local out = {}
        for _, f in ipairs(records(dict, 4)) do
            out[#out + 1] = f[2] .. "\n" .. f[4] .. "\n"
        end
        body = concat(out)
    elseif what == "upstream" then
        if #res ~= 2 then
            return respond(404, "")
        end
        local rec = current(dict, lower(res[2]))
        if not rec then
            return respond(404, "")
        end
        body = decode(rec, 3)[3]
    else
        return respond(404, "")
    end

    if body == "" then
        return respond(204, "")
    end
    return respond(200, body)
end

-- path_upstream is NAME of a path /upstream/NAME, or nil and what dyups
-- says of any other path (ngx_http_dyups_do_delete and _do_post).
local function path_upstream(res)
    if #res ~= 2 then
        return nil, "not support this interface"
    end
    if lower(res[1]) ~= "upstream" then
        return nil, "not support this api"
    end
    return res[2]
end

local function do_delete(res)
    local name, why = path_upstream(res)
    if not name then
        return respond(405, why)
    end

    local dict = conf.dict
    if not valid_name(name) then
        -- No such upstream can exist.
        log(ERR, "swallowkeeper: upstream \"", printable(name), "\": name is not ", NAME_RULE,
            "; delete refused")
        return respond(404, "not found uptream")
    end
    local key = lower(name)
    local rev = dict:get(P_REV .. key)
    if not rev then
        return respond(404, "not found uptream")
    end
    -- Pointer first: a worker that still sees it may rebuild from the
    -- record only until the record is gone, never after.
    dict:delete(P_REV .. key)
    dict:delete(P_UPS .. rev)
    dict:incr(K_VERSION, 1, 0)
    log(INFO, "swallowkeeper: upstream \"", name, "\" deleted")
    return respond(200, "success")
end

local function request_body()
    local data = ngx.req.get_body_data()
    if data then
        return data
    end
    -- A body larger than client_body_buffer_size is kept in a temp file.
    local file = ngx.req.get_body_file()
    if file then
        return read_file(file)
    end
    return ""
end

local function do_post(name, body)
    if not valid_name(name) then
        log(ERR, "swallowkeeper: upstream \"", printable(name), "\": name is not ", NAME_RULE,
            "; update refused")
        return respond(500, "add server failed")
    end
    local ups, err = parse.parse_body(body)
    if not ups then
        log(ERR, "swallowkeeper: upstream \"", name, "\": ", err, "; update refused")
        return respond(500, "add server failed")
    end
    if not conf.allow_unix then
        for _, s in ipairs(ups.servers) do
            if s.unix then
                log(ERR, "swallowkeeper: upstream \"", name, "\": unix: server \"",
                    printable(s.name), "\" refused (init option allow_unix_servers is off)",
                    "; update refused")
                return respond(500, "add server failed")
            end
        end
    end
    local ok, full
    ok, err, full = store(conf.dict, name, ups)
    if not ok then
        log(ERR, "swallowkeeper: upstream \"", name, "\": ", err, "; update refused")
        return respond(500, "add server failed", full and FULL or nil)
    end
    log(INFO, "swallowkeeper: upstream \"", name, "\" set to ", #ups.servers, " server(s)")
    return respond(200, "success")
end

-- authorized checks X-SwallowKeeper-Secret when a secret is configured:
-- exactly one such header, whose SHA-1 equals the secret's, compared in
-- time independent of where they differ.
local function authorized()
    local want = conf.secret_hash
    if not want then
        return true
    end
    local given = ngx.req.get_headers()[SECRET_HEADER]
    if type(given) ~= "string" then
        return false
    end
    local got = ngx.sha1_bin(given)
    local diff = 0
    for i = 1, #want do
        diff = bor(diff, bxor(byte(got, i), byte(want, i)))
    end
    return diff == 0
end

function _M.api()
    if not conf then
        not_ready()
        return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
    end

    if not authorized() then
        log(WARN, "swallowkeeper: API request refused: X-SwallowKeeper-Secret missing or wrong")
        ngx.req.discard_body()
        return respond(403, "forbidden\n")
    end

    local method = ngx.req.get_method()
    if method == "GET" then
        ngx.req.discard_body()
        return do_get(split_path(ngx.var.uri))
    end
    if method == "DELETE" then
        ngx.req.discard_body()
        return do_delete(split_path(ngx.var.uri))
    end

    -- Like dyups, read the body of any other method before looking at it
    -- (so an oversized body is a 413 whatever the method).
    ngx.req.read_body()
    if method ~= "POST" then
        return respond(405, "")
    end

    -- No Content-Length and not chunked: nginx has no request body at all,
    -- which dyups answers with 204. An empty body (Content-Length: 0) is a
    -- body, and an upstream without servers: 500 below.
    local v = ngx.var
    if not v.http_content_length and not v.http_transfer_encoding then
        return respond(204, "")
    end

    local body, err = request_body()
    if not body then
        log(ERR, "swallowkeeper: cannot read the request body: ", err)
        return respond(500, "add server failed")
    end

    local name, why = path_upstream(split_path(v.uri))
    if not name then
        return respond(404, why)
    end
    return do_post(name, body)
end

-- ---------------------------------------------------------------------
-- For swallowkeeper.split (traffic splits between upstreams)
-- ---------------------------------------------------------------------

-- shared returns the lua_shared_dict init() bound, or nil before init().
function _M.shared()
    return conf and conf.dict
end

-- api_allowed says whether this API request may proceed: it carries the
-- secret, or none is configured.
function _M.api_allowed()
    return conf ~= nil and authorized()
end

-- usable says whether upstream `name` exists and, in this worker's view,
-- has a server that may take a request: not down, and not left alone
-- after max_fails failures within fail_timeout.
function _M.usable(name)
    if not conf then
        return false
    end
    local ups = lookup(name)
    if not ups then
        return false
    end
    local now = ngx.now()
    for _, set in ipairs({ ups.primary, ups.backup }) do
        for _, p in ipairs(set) do
            if not p.down and not methods.failed(p, now) then
                return true
            end
        end
    end
    return false
end

-- valid_name and printable, for swallowkeeper.split: one alphabet of
-- upstream names, one escaping of what goes into error.log.
_M.valid_name, _M.printable = valid_name, printable

return _M
