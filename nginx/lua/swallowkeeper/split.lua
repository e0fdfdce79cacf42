-- swallowkeeper.split: blue/green and canary traffic splits between an
-- upstream and its groups (`web` and `web_canary`), changed without reload.
--
--   api()          content_by_lua handler of GET /split, GET|POST|DELETE
--                  /split/NAME on the dyups API server (same access rules
--                  and secret as swallowkeeper.dyups).
--   route(name)    set_by_lua handler: returns the upstream a request for
--                  upstream `name` goes to: a group named by name's split
--                  rule, or `name` itself.
--   fallback(name) rewrite_by_lua handler of an `error_page 502` location:
--                  a request its group failed goes to `name` instead.
--
-- A rule (POST body, one directive a line, single spaces):
--   to web_canary            the group's upstream (required): NAME_<group>,
--                            never another service's upstream
--   percent 10               share of the remaining requests, 0 to 100
--                            with at most two decimals (default 0)
--   sticky addr              hash of the client address,
--   sticky header X-User     of a request header,
--   sticky cookie sid        or of a cookie picks the share (absent: each
--                            request is drawn at random)
--   header X-Canary 1        a request with this header value,
--   cookie canary 1          or this cookie value, goes to the group
--                            whatever the share (any one match is enough)
--
-- route() checks the matches first, then the share. When the group's
-- upstream does not exist or has no server that may take a request in this
-- worker (all `down`, or all failed within fail_timeout), the request goes
-- to `name`: a split never turns into errors for want of a group.
--
-- Rules live in the dyups module's shared dict, next to the upstreams:
--   s:<name>       name lowercased -> "<display name>\n<canonical rule>"
--   sk:splitver    incremented on every change
-- Every request reads sk:splitver (one dict get); a worker re-reads a rule
-- only when it moved, so every worker applies a change on its next request.

local dyups = require "swallowkeeper.dyups"

local ngx = ngx
local log, ERR, WARN, INFO = ngx.log, ngx.ERR, ngx.WARN, ngx.INFO
local find, sub, lower, gsub, fmt, concat, gmatch =
    string.find, string.sub, string.lower, string.gsub, string.format,
    table.concat, string.gmatch
local tonumber, ipairs, floor, sort, random = tonumber, ipairs, math.floor, table.sort, math.random

local _M = { _VERSION = "1.0" }

local K_VERSION, P_SPLIT = "sk:splitver", "s:"
local SCALE = 10000 -- shares are kept in hundredths of a percent
local MAX_VALUE = 256
local MAX_TOKEN = 64

local valid_name, printable = dyups.valid_name, dyups.printable

-- is_group says whether upstream `to` is one of upstream `name`'s groups
-- by its name: name, "_", then at least one character, without case. A
-- split moves a service's requests only to its own groups (web to
-- web_canary), never to another service's upstream (web to admin), even
-- if whoever writes rules says so. The daemon applies the same rule.
local function is_group(to, name)
    local p = lower(name) .. "_"
    return #to > #p and sub(lower(to), 1, #p) == p
end

-- RFC 9110 token characters: header and cookie names.
local function valid_token(s)
    return #s >= 1 and #s <= MAX_TOKEN and find(s, "^[!#$%%&'*+%-.^_`|~0-9A-Za-z]+$") ~= nil
end

-- Visible ASCII, no spaces: a header or cookie value to match exactly.
local function valid_value(s)
    return #s >= 1 and #s <= MAX_VALUE and find(s, "^[\33-\126]+$") ~= nil
end

-- percent_text writes hundredths of a percent the way the daemon does:
-- "10", "0.5", "12.25".
local function percent_text(bp)
    local s = fmt("%d.%02d", floor(bp / 100), bp % 100)
    s = gsub(s, "0+$", "")
    return (gsub(s, "%.$", ""))
end

-- parse_percent accepts 0 to 100 with at most two decimals.
local function parse_percent(s)
    local int, frac = s:match("^(%d+)%.?(%d*)$")
    if not int or #int > 3 or #frac > 2 or (frac == "" and find(s, ".", 1, true)) then
        return nil
    end
    local bp = tonumber(int) * 100 + (frac ~= "" and tonumber(frac .. sub("00", #frac + 1)) or 0)
    if bp > SCALE then
        return nil
    end
    return bp
end

-- canonical renders a parsed rule: the text GET answers and the daemon
-- compares with its own rendering (same order, same spelling).
local function canonical(r)
    local out = { "to " .. r.to .. "\n", "percent " .. percent_text(r.bp) .. "\n" }
    if r.sticky_kind then
        out[#out + 1] = "sticky " .. r.sticky_kind .. (r.sticky_name and (" " .. r.sticky_name) or "") .. "\n"
    end
    for _, kind in ipairs({ "header", "cookie" }) do
        for _, m in ipairs(r[kind]) do
            out[#out + 1] = kind .. " " .. m.name .. " " .. m.value .. "\n"
        end
    end
    return concat(out)
end

-- parse reads a rule for upstream `name`. Returns the rule, or nil and why.
local function parse(name, body)
    local r = { bp = 0, header = {}, cookie = {} }
    local seen = {}
    local n = 0
    for line in gmatch(body, "[^\n]+") do
        n = n + 1
        if n > 200 then
            return nil, "more than 200 lines"
        end
        local words = {}
        for w in gmatch(line, "[^ ]+") do
            words[#words + 1] = w
        end
        local what = words[1]
        if what == "to" or what == "percent" then
            if #words ~= 2 then
                return nil, fmt("line %d: \"%s\" takes one value", n, what)
            end
            if seen[what] then
                return nil, fmt("line %d: \"%s\" given twice", n, what)
            end
            seen[what] = true
            if what == "to" then
                if not valid_name(words[2]) then
                    return nil, fmt("line %d: \"%s\" is not an upstream name", n, printable(words[2]))
                end
                r.to = words[2]
            else
                r.bp = parse_percent(words[2])
                if not r.bp then
                    return nil, fmt("line %d: percent \"%s\": want 0 to 100, at most two decimals",
                                    n, printable(words[2]))
                end
            end
        elseif what == "sticky" then
            if seen.sticky then
                return nil, fmt("line %d: \"sticky\" given twice", n)
            end
            seen.sticky = true
            if words[2] == "addr" and #words == 2 then
                r.sticky_kind = "addr"
            elseif (words[2] == "header" or words[2] == "cookie") and #words == 3
                and valid_token(words[3])
            then
                r.sticky_kind, r.sticky_name = words[2], words[3]
            else
                return nil, fmt("line %d: want \"sticky addr\", \"sticky header NAME\" or "
                                .. "\"sticky cookie NAME\"", n)
            end
        elseif what == "header" or what == "cookie" then
            if #words ~= 3 or not valid_token(words[2]) or not valid_value(words[3]) then
                return nil, fmt("line %d: want \"%s NAME VALUE\" (NAME a token, VALUE visible "
                                .. "ASCII without spaces)", n, what)
            end
            local key = what .. " " .. lower(words[2])
            if seen[key] then
                return nil, fmt("line %d: %s \"%s\" given twice", n, what, words[2])
            end
            seen[key] = true
            local list = r[what]
            list[#list + 1] = { name = words[2], value = words[3] }
        else
            return nil, fmt("line %d: unknown directive \"%s\"", n, printable(what or ""))
        end
    end
    if not r.to then
        return nil, "\"to\" is required"
    end
    if lower(r.to) == lower(name) then
        return nil, "\"to\" names the split's own upstream"
    end
    if not is_group(r.to, name) then
        return nil, fmt("\"to\" %s is not a group of %s: want %s_<group>", r.to, name, name)
    end
    local by_name = function(a, b) return lower(a.name) < lower(b.name) end
    sort(r.header, by_name)
    sort(r.cookie, by_name)
    return r
end

-- compile adds what route() needs to a parsed rule.
local function compile(key, r)
    r.salt = key .. "\0"
    for _, m in ipairs(r.header) do
        m.var = "http_" .. gsub(lower(m.name), "-", "_")
    end
    for _, m in ipairs(r.cookie) do
        m.var = "cookie_" .. m.name
    end
    if r.sticky_kind == "addr" then
        r.sticky_var = "remote_addr"
    elseif r.sticky_kind == "header" then
        r.sticky_var = "http_" .. gsub(lower(r.sticky_name), "-", "_")
    elseif r.sticky_kind == "cookie" then
        r.sticky_var = "cookie_" .. r.sticky_name
    end
    return r
end

-- ---------------------------------------------------------------------
-- Request path
-- ---------------------------------------------------------------------

-- cache[lowercased name] = the compiled rule (false: stored but
-- unreadable), as of sk:splitver cache_version. Only names that have a
-- rule are kept: route() is called with any Host a client sends, and a
-- miss costs one dict get, not an entry.
local cache, cache_version = {}, nil
local seeded = false

-- group_failed[lowercased group] = when a request last failed on every
-- server of that group in this worker (see fallback). The group is then
-- skipped for GROUP_HOLD seconds, nginx's default fail_timeout, so that
-- requests stop paying for a dead group's connection attempts.
local group_failed = {}
local GROUP_HOLD = 10

local function rule_for(dict, key)
    local version = dict:get(K_VERSION) or 0
    if version ~= cache_version then
        cache, cache_version = {}, version
    end
    local rule = cache[key]
    if rule ~= nil then
        return rule
    end
    local rec = dict:get(P_SPLIT .. key)
    if not rec then
        return false
    end
    local nl = find(rec, "\n", 1, true)
    local r, err = parse(sub(rec, 1, nl - 1), sub(rec, nl + 1))
    rule = false
    if r then
        rule = compile(key, r)
    else
        log(ERR, "swallowkeeper: split \"", key, "\": stored rule unreadable: ", err)
    end
    cache[key] = rule
    return rule
end

function _M.route(name)
    if not name or name == "" then
        return name or ""
    end
    local dict = dyups.shared()
    if not dict then
        return name
    end
    local rule = rule_for(dict, lower(name))
    if not rule then
        return name
    end

    local var = ngx.var
    local group = false
    for _, list in ipairs({ rule.header, rule.cookie }) do
        for i = 1, #list do
            local m = list[i]
            if var[m.var] == m.value then
                group = true
                break
            end
        end
        if group then
            break
        end
    end

    if not group and rule.bp > 0 then
        if rule.bp >= SCALE then
            group = true
        else
            local key = rule.sticky_var and var[rule.sticky_var]
            local bucket
            if key and key ~= "" then
                bucket = ngx.crc32_long(rule.salt .. key) % SCALE
            else
                if not seeded then
                    math.randomseed(ngx.worker.pid() * 1000003 + floor(ngx.now() * 1000))
                    seeded = true
                end
                bucket = random(0, SCALE - 1)
            end
            group = bucket < rule.bp
        end
    end

    -- is_group: parse() refused the rule already; checked again here
    -- because this line is what sends the request.
    if group and is_group(rule.to, name) and dyups.usable(rule.to) then
        local failed = group_failed[lower(rule.to)]
        if not failed or ngx.now() - failed > GROUP_HOLD then
            return rule.to
        end
    end
    return name
end

-- Methods nginx never sends to a second server once the first one may have
-- seen them (proxy_next_upstream's "non_idempotent").
local NON_IDEMPOTENT = { POST = true, LOCK = true, PATCH = true }

-- fallback() (rewrite_by_lua of the location that `error_page 502` names)
-- sends a request whose group answered 502 -- every server of the group
-- dead, found only by trying -- to its main upstream `name`, once. A
-- request that went to the main upstream already, or whose method is not
-- idempotent, keeps its 502; the group is skipped for GROUP_HOLD seconds
-- either way, so that the next requests, of any method, go to `name`.
function _M.fallback(name)
    local var = ngx.var
    local chosen = var.sk_upstream
    if not name or name == "" or not chosen or lower(chosen) == lower(name) then
        return ngx.exit(502)
    end
    group_failed[lower(chosen)] = ngx.now()
    local method = ngx.req.get_method()
    if NON_IDEMPOTENT[method] then
        log(WARN, "swallowkeeper: split \"", name, "\": group \"", chosen, "\" failed; ", method,
            " not sent again (not idempotent); group skipped for ", GROUP_HOLD, "s")
        return ngx.exit(502)
    end
    log(WARN, "swallowkeeper: split \"", name, "\": group \"", chosen,
        "\" failed, request sent to \"", name, "\"; group skipped for ", GROUP_HOLD, "s")
    var.sk_upstream = name
end

-- ---------------------------------------------------------------------
-- API
-- ---------------------------------------------------------------------

local function respond(status, body)
    ngx.status = status
    ngx.header.content_type = "text/plain"
    if body ~= "" then
        ngx.print(body)
    end
    return ngx.exit(ngx.HTTP_OK)
end

local function segments(uri)
    local res = {}
    for seg in gmatch(uri, "[^/]+") do
        res[#res + 1] = seg
    end
    return res
end

local function get_all(dict)
    local names = {}
    for _, k in ipairs(dict:get_keys(0)) do
        if sub(k, 1, 2) == P_SPLIT then
            names[#names + 1] = k
        end
    end
    sort(names)
    local out = {}
    for _, k in ipairs(names) do
        local rec = dict:get(k)
        if rec then
            local nl = find(rec, "\n", 1, true)
            out[#out + 1] = "split " .. sub(rec, 1, nl - 1) .. "\n" .. sub(rec, nl + 1) .. "\n"
        end
    end
    if #out == 0 then
        return respond(204, "")
    end
    return respond(200, concat(out))
end

-- not_announced answers a change whose version bump failed (dict full, or
-- sk:splitver not a number): the change was undone, nothing is in force.
local function not_announced(name, err)
    log(ERR, "swallowkeeper: split \"", name, "\": lua_shared_dict: ", K_VERSION, ": ", err,
        "; change undone")
    ngx.header["X-SwallowKeeper-Error"] = err == "no memory" and "shared dict full" or err
    return respond(500, "split not stored\n")
end

local function read_body()
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if data then
        return data
    end
    if ngx.req.get_body_file() then
        return nil
    end
    return ""
end

function _M.api()
    local dict = dyups.shared()
    if not dict then
        log(ERR, "swallowkeeper: require(\"swallowkeeper.dyups\").init() was not called in init_by_lua")
        return respond(500, "not initialised\n")
    end
    if not dyups.api_allowed() then
        log(WARN, "swallowkeeper: split API request refused: X-SwallowKeeper-Secret missing or wrong")
        ngx.req.discard_body()
        return respond(403, "forbidden\n")
    end

    local method = ngx.req.get_method()
    local res = segments(ngx.var.uri)
    if lower(res[1] or "") ~= "split" or #res > 2 then
        ngx.req.discard_body()
        return respond(404, "not found\n")
    end
    local name = res[2]

    if method == "GET" and not name then
        return get_all(dict)
    end
    if not name then
        ngx.req.discard_body()
        return respond(405, "want GET /split, or GET, POST or DELETE /split/NAME\n")
    end
    if not valid_name(name) then
        ngx.req.discard_body()
        return respond(400, "invalid split: \"" .. printable(name) .. "\" is not an upstream name\n")
    end
    local key = lower(name)

    if method == "GET" then
        local rec = dict:get(P_SPLIT .. key)
        if not rec then
            return respond(404, "not found split\n")
        end
        return respond(200, sub(rec, find(rec, "\n", 1, true) + 1))
    end

    if method == "DELETE" then
        ngx.req.discard_body()
        if not dict:get(P_SPLIT .. key) then
            return respond(404, "not found split\n")
        end
        local rec = dict:get(P_SPLIT .. key)
        dict:delete(P_SPLIT .. key)
        local ok, ierr = dict:incr(K_VERSION, 1, 0)
        if not ok then
            dict:set(P_SPLIT .. key, rec) -- the workers would not see the change
            return not_announced(name, ierr)
        end
        log(INFO, "swallowkeeper: split \"", name, "\" deleted")
        return respond(200, "success")
    end

    if method ~= "POST" then
        ngx.req.discard_body()
        return respond(405, "want GET, POST or DELETE\n")
    end
    local body = read_body()
    if not body then
        return respond(413, "rule too large\n")
    end
    local r, err = parse(name, body)
    if not r then
        log(ERR, "swallowkeeper: split \"", name, "\": ", err, "; update refused")
        return respond(400, "invalid split: " .. err .. "\n")
    end
    local text = canonical(r)
    local prev = dict:get(P_SPLIT .. key)
    local ok
    ok, err = dict:safe_set(P_SPLIT .. key, name .. "\n" .. text)
    if not ok then
        log(ERR, "swallowkeeper: split \"", name, "\": lua_shared_dict: ", err, "; update refused")
        ngx.header["X-SwallowKeeper-Error"] = err == "no memory" and "shared dict full" or err
        return respond(500, "split not stored\n")
    end
    ok, err = dict:incr(K_VERSION, 1, 0)
    if not ok then
        -- The workers would go on with the rule they cached: put the old
        -- one back, so that GET shows what is in force and the daemon
        -- tries again.
        if prev then
            dict:set(P_SPLIT .. key, prev)
        else
            dict:delete(P_SPLIT .. key)
        end
        return not_announced(name, err)
    end
    log(INFO, "swallowkeeper: split \"", name, "\" set: to ", r.to, " ", percent_text(r.bp), "%")
    return respond(200, "success")
end

-- For tests of the rule format without nginx's request API.
_M._parse, _M._canonical = parse, canonical

return _M
