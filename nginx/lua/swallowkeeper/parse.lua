-- swallowkeeper.parse: the inside of an nginx `upstream {}` block, read the
-- way nginx reads it.
--
-- ngx_http_dyups_module hands a POST body to nginx's own configuration
-- parser, so anything nginx accepts inside `upstream {}` it accepts, and
-- anything nginx refuses it refuses. To answer the same way on stock nginx
-- we port, function by function, the pieces of nginx that decide:
--
--   ngx_conf_read_token        tokens, quotes, escapes, `#` comments, `;`
--   ngx_http_upstream_server   `server ADDR [params]` and its defaults
--   ngx_parse_url & friends    ADDR: IPv4, [IPv6], unix:, default port 80
--   ngx_sock_ntop              the canonical ADDR text that /detail shows
--   ngx_atoi, ngx_parse_time   numbers, overflow and `10s`/`2m` durations
--
-- The one thing we do not port is name resolution: nginx would block a
-- worker on getaddrinfo() for a hostname; we refuse it (SwallowKeeper only
-- ever sends IP literals). Everything here is pure Lua with no nginx API, so
-- it runs in init_by_lua (the persisted file) and in request handlers alike.

local ffi = require "ffi" -- only for exact 64-bit arithmetic (int64_t)
local bit = require "bit"

local byte, sub, char, find, lower, fmt, concat =
    string.byte, string.sub, string.char, string.find, string.lower,
    string.format, table.concat
local floor, tonumber, tostring, ipairs = math.floor, tonumber, tostring, ipairs
local bor = bit.bor

local _M = {}

-- Byte values used by the tokenizer.
local SP, TAB, CR, LF = 32, 9, 13, 10
local SEMI, LBRACE, RBRACE, HASH = 59, 123, 125, 35
local BSLASH, DQUOTE, SQUOTE, DOLLAR, RPAREN = 92, 34, 39, 36, 41
local COLON, DOT, LBRACKET, RBRACKET, SLASH, QMARK = 58, 46, 91, 93, 47, 63

local function is_space(c)
    return c == SP or c == TAB or c == CR or c == LF
end

-- nginx stores these counters in ngx_int_t / time_t: 64-bit on the platforms
-- we care about. /detail prints them with %i / %T, so a value like
-- weight=9223372036854775807 must survive exactly; Lua numbers (doubles)
-- cannot hold that, LuaJIT's int64_t cdata can.
local I64 = ffi.typeof("int64_t")
local MAX = I64(9223372036854775807LL)
local ZERO = I64(0)

local function i64_str(v)
    return (tostring(v):gsub("LL$", ""))
end

-- ngx_atoi: decimal digits only, no sign, no empty string, NGX_ERROR on
-- overflow of ngx_int_t. Returns the value as canonical text (what %i would
-- print) and as a Lua number (for arithmetic), or nil.
local function atoi(s)
    local n = #s
    if n == 0 or find(s, "[^0-9]") then
        return nil
    end
    local digits = s:match("^0*(%d-)$")
    if digits == "" then
        return "0", 0
    end
    if #digits > 19 or (#digits == 19 and digits > "9223372036854775807") then
        return nil
    end
    return digits, tonumber(digits)
end
_M.atoi = atoi

-- ngx_parse_time: "1y2M3w4d5h6m7s", "500ms" (only when not is_sec), bare
-- numbers, with nginx's ordering rules and overflow checks. With is_sec the
-- result is in seconds, else in milliseconds. Returns canonical text and a
-- Lua number, or nil.
local ST_START, ST_YEAR, ST_MONTH, ST_WEEK, ST_DAY, ST_HOUR, ST_MIN, ST_SEC,
      ST_MSEC, ST_LAST = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9

local function parse_time(s, is_sec)
    local value, total = ZERO, ZERO
    local valid = false
    local step = is_sec and ST_START or ST_MONTH
    local cutoff, cutlim = MAX / 10, 7
    local p, last = 1, #s

    while p <= last do
        local c = byte(s, p)
        if c >= 48 and c <= 57 then
            local d = c - 48
            if value >= cutoff and (value > cutoff or d > cutlim) then
                return nil
            end
            value = value * 10 + d
            valid = true
            p = p + 1
        else
            p = p + 1
            local max, scale
            if c == 121 then -- y
                if step > ST_START then return nil end
                step, max, scale = ST_YEAR, MAX / 31536000, 31536000
            elseif c == 77 then -- M
                if step >= ST_MONTH then return nil end
                step, max, scale = ST_MONTH, MAX / 2592000, 2592000
            elseif c == 119 then -- w
                if step >= ST_WEEK then return nil end
                step, max, scale = ST_WEEK, MAX / 604800, 604800
            elseif c == 100 then -- d
                if step >= ST_DAY then return nil end
                step, max, scale = ST_DAY, MAX / 86400, 86400
            elseif c == 104 then -- h
                if step >= ST_HOUR then return nil end
                step, max, scale = ST_HOUR, MAX / 3600, 3600
            elseif c == 109 then -- m or ms
                if p <= last and byte(s, p) == 115 then
                    if is_sec or step >= ST_MSEC then return nil end
                    p = p + 1
                    step, max, scale = ST_MSEC, MAX, 1
                else
                    if step >= ST_MIN then return nil end
                    step, max, scale = ST_MIN, MAX / 60, 60
                end
            elseif c == 115 then -- s
                if step >= ST_SEC then return nil end
                step, max, scale = ST_SEC, MAX, 1
            elseif c == SP then
                if step >= ST_SEC then return nil end
                step, max, scale = ST_LAST, MAX, 1
            else
                return nil
            end

            if step ~= ST_MSEC and not is_sec then
                scale = scale * 1000
                max = max / 1000
            end
            if value > max then
                return nil
            end
            value = value * scale
            if total > MAX - value then
                return nil
            end
            total = total + value
            value = ZERO
            while p <= last and byte(s, p) == SP do
                p = p + 1
            end
        end
    end

    if not valid then
        return nil
    end
    if not is_sec then
        if value > MAX / 1000 then
            return nil
        end
        value = value * 1000
    end
    if total > MAX - value then
        return nil
    end
    total = total + value
    return i64_str(total), tonumber(total)
end
_M.parse_time = parse_time

-- ngx_inet_addr: four dot-separated decimal octets. Like nginx it accepts
-- empty octets ("1..2.3" is 1.0.2.3) and leading zeros. Returns the address
-- as a 32-bit number in host order, or nil.
local function inet_addr(s, i, j)
    local addr, octet, n = 0, 0, 0
    for k = i, j do
        local c = byte(s, k)
        if c >= 48 and c <= 57 then
            octet = octet * 10 + (c - 48)
            if octet > 255 then
                return nil
            end
        elseif c == DOT then
            addr = addr * 256 + octet
            octet = 0
            n = n + 1
        else
            return nil
        end
    end
    if n == 3 then
        return addr * 256 + octet
    end
    return nil
end

-- ngx_inet6_addr: returns a 16-element array of bytes, or nil. Ported with
-- its quirks (e.g. a single leading ':' is skipped) so we accept exactly the
-- addresses nginx accepts.
local function inet6_addr(s, i, j)
    local len = j - i + 1
    if len <= 0 then
        return nil
    end

    local addr = {}
    local a = 1 -- next byte to write
    local zero -- index in addr where "::" was seen
    local digit -- index in s just after the last ':'
    local nibbles, word, n = 0, 0, 8
    local p = i

    if byte(s, p) == COLON then
        p = p + 1
        len = len - 1
    end

    while len > 0 do
        local c = byte(s, p)
        p = p + 1

        if c == COLON then
            if nibbles > 0 then
                digit = p
                addr[a], addr[a + 1] = floor(word / 256), word % 256
                a = a + 2
                n = n - 1
                if n == 0 then
                    return nil
                end
                nibbles, word = 0, 0
            elseif not zero then
                digit = p
                zero = a
            else
                return nil
            end

        elseif c == DOT and nibbles > 0 then
            -- An embedded IPv4 address ends the text: parse it from the
            -- start of the current group to the end.
            if n < 2 or not digit then
                return nil
            end
            local w = inet_addr(s, digit, j)
            if not w then
                return nil
            end
            addr[a], addr[a + 1] = floor(w / 16777216) % 256, floor(w / 65536) % 256
            a = a + 2
            n = n - 1
            word = w % 65536
            break

        else
            nibbles = nibbles + 1
            if nibbles > 4 then
                return nil
            end
            if c >= 48 and c <= 57 then
                word = word * 16 + (c - 48)
            else
                c = bor(c, 0x20) -- lower case, as nginx does
                if c >= 97 and c <= 102 then
                    word = word * 16 + (c - 87)
                else
                    return nil
                end
            end
        end
        len = len - 1
    end

    if nibbles == 0 and not zero then
        return nil
    end

    addr[a], addr[a + 1] = floor(word / 256), word % 256
    a = a + 2
    n = n - 1

    if n > 0 then
        if zero then
            -- Move what followed "::" to the end and zero-fill the gap.
            local shift = n * 2
            for k = a - 1, zero, -1 do
                addr[k + shift] = addr[k]
            end
            for k = zero, zero + shift - 1 do
                addr[k] = 0
            end
            return addr
        end
    elseif not zero then
        return addr
    end
    return nil
end

-- ngx_inet6_ntop: nginx's text form (RFC 5952-like, with its own rules for
-- embedded IPv4). /detail shows this, so it must match byte for byte.
local function inet6_ntop(p)
    local zero, last, max, n = -1, -1, 1, 0
    for i = 0, 14, 2 do
        if p[i + 1] ~= 0 or p[i + 2] ~= 0 then
            if max < n then
                zero, max = last, n
            end
            n = 0
        else
            if n == 0 then
                last = i
            end
            n = n + 1
        end
    end
    if max < n then
        zero, max = last, n
    end

    local out = {}
    local stop = 16
    if zero == 0 then
        if (max == 5 and p[11] == 0xff and p[12] == 0xff)
            or max == 6
            or (max == 7 and p[15] ~= 0 and p[16] ~= 1)
        then
            stop = 12
        end
        out[#out + 1] = ":"
    end

    local i = 0
    while i < stop do
        if i == zero then
            out[#out + 1] = ":"
            i = i + (max - 1) * 2
        else
            out[#out + 1] = fmt("%x", p[i + 1] * 256 + p[i + 2])
            if i < 14 then
                out[#out + 1] = ":"
            end
        end
        i = i + 2
    end

    if stop == 12 then
        out[#out + 1] = fmt("%d.%d.%d.%d", p[13], p[14], p[15], p[16])
    end
    return concat(out)
end

-- sizeof(((struct sockaddr_un *) 0)->sun_path) on Linux.
local SUN_PATH_LEN = 108

-- ngx_parse_url as ngx_http_upstream_server calls it (default port 80, no
-- URI part allowed). Returns a table { name = canonical text for /detail,
-- host = what to give balancer.set_current_peer, port = number or nil } or
-- nil and nginx's error text.
local function parse_addr(url)
    local len = #url

    if len >= 5 and lower(sub(url, 1, 5)) == "unix:" then
        local path = sub(url, 6)
        if path == "" then
            return nil, "no path in the unix domain socket"
        end
        if #path + 1 > SUN_PATH_LEN then
            return nil, "too long path in the unix domain socket"
        end
        -- nginx names the peer by the text as written ("UNIX:/x" stays so).
        return { name = url, host = url, unix = true }
    end

    if len > 0 and byte(url, 1) == LBRACKET then
        local rb = find(url, "]", 2, true)
        if not rb then
            return nil, "invalid host"
        end
        local port_pos = rb + 1
        if find(url, "/", port_pos, true) then
            return nil, "invalid host"
        end
        local port = 80
        if byte(url, port_pos) == COLON then
            local _, n = atoi(sub(url, port_pos + 1))
            if not n or n < 1 or n > 65535 then
                return nil, "invalid port"
            end
            port = n
        elseif port_pos <= len then
            return nil, "invalid host"
        end
        if rb == 2 then
            return nil, "no host"
        end
        local bytes = inet6_addr(url, 2, rb - 1)
        if not bytes then
            return nil, "invalid IPv6 address"
        end
        local text = inet6_ntop(bytes)
        return { name = "[" .. text .. "]:" .. port, host = "[" .. text .. "]",
                 port = port }
    end

    -- IPv4 or a hostname. The first ':' starts the port, so an IPv6 address
    -- without brackets fails here with "invalid port", as in nginx.
    local colon = find(url, ":", 1, true)
    local uri = find(url, "/", 1, true)
    local args = find(url, "?", 1, true)
    if args and (not uri or args < uri) then
        uri = args
    end
    if uri then
        return nil, "invalid host"
    end

    local host_end, port = len, 80
    if colon then
        local _, n = atoi(sub(url, colon + 1))
        if not n or n < 1 or n > 65535 then
            return nil, "invalid port"
        end
        port = n
        host_end = colon - 1
    end
    if host_end == 0 then
        return nil, "no host"
    end

    local a = inet_addr(url, 1, host_end)
    if not a then
        -- nginx would resolve it with a blocking getaddrinfo() inside the
        -- worker; SwallowKeeper only sends IP literals, so refuse instead.
        return nil, "host not found (hostnames are not resolved, use an IP address)"
    end
    local text = fmt("%d.%d.%d.%d", floor(a / 16777216), floor(a / 65536) % 256,
                     floor(a / 256) % 256, a % 256)
    return { name = text .. ":" .. port, host = text, port = port }
end
_M.parse_addr = parse_addr

-- ngx_conf_read_token, for text held in memory. `file_mode` selects the
-- messages nginx uses for a file rather than a -g style parameter buffer.
-- Reads one statement into `args`; returns rc, next position, error:
--   rc "ok"          statement ended by ';'
--   rc "block_start" statement ended by '{'
--   rc "block_done"  a lone '}'
--   rc "eof"         clean end of text
local function unescape(s)
    if not find(s, "\\", 1, true) then
        return s
    end
    -- The copy loop of ngx_conf_read_token: \" \' \\ lose the backslash,
    -- \t \r \n become control characters, any other backslash stays.
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = byte(s, i)
        if c == BSLASH then
            local d = byte(s, i + 1)
            if d == DQUOTE or d == SQUOTE or d == BSLASH then
                out[#out + 1] = char(d)
                i = i + 2
            elseif d == 116 then
                out[#out + 1] = "\t"
                i = i + 2
            elseif d == 114 then
                out[#out + 1] = "\r"
                i = i + 2
            elseif d == 110 then
                out[#out + 1] = "\n"
                i = i + 2
            else
                out[#out + 1] = "\\"
                i = i + 1
            end
        else
            out[#out + 1] = char(c)
            i = i + 1
        end
    end
    return concat(out)
end

local function read_token(s, pos, args, file_mode)
    local n = #s
    local found, need_space, last_space = false, false, true
    local sharp_comment, variable, quoted = false, false, false
    local s_quoted, d_quoted = false, false
    local start = pos

    while true do
        if pos > n then
            if #args > 0 or not last_space then
                if file_mode then
                    return nil, pos, 'unexpected end of file, expecting ";" or "}"'
                end
                return nil, pos, 'unexpected end of parameter, expecting ";"'
            end
            return "eof", pos
        end

        local ch = byte(s, pos)
        pos = pos + 1

        if ch == LF and sharp_comment then
            sharp_comment = false
        end

        if sharp_comment then
            -- skip the rest of the comment line

        elseif quoted then
            quoted = false

        else
            local skip = false

            if need_space then
                if is_space(ch) then
                    last_space, need_space = true, false
                    skip = true
                elseif ch == SEMI then
                    return "ok", pos
                elseif ch == LBRACE then
                    return "block_start", pos
                elseif ch == RPAREN then
                    last_space, need_space = true, false
                else
                    return nil, pos, fmt('unexpected "%s"', char(ch))
                end
            end

            if skip then
                -- whitespace after a closing quote

            elseif last_space then
                if not is_space(ch) then
                    start = pos - 1
                    if ch == SEMI or ch == LBRACE then
                        if #args == 0 then
                            return nil, pos, fmt('unexpected "%s"', char(ch))
                        end
                        if ch == LBRACE then
                            return "block_start", pos
                        end
                        return "ok", pos
                    elseif ch == RBRACE then
                        if #args ~= 0 then
                            return nil, pos, 'unexpected "}"'
                        end
                        return "block_done", pos
                    elseif ch == HASH then
                        sharp_comment = true
                    elseif ch == BSLASH then
                        quoted, last_space = true, false
                    elseif ch == DQUOTE then
                        start = start + 1
                        d_quoted, last_space = true, false
                    elseif ch == SQUOTE then
                        start = start + 1
                        s_quoted, last_space = true, false
                    elseif ch == DOLLAR then
                        variable, last_space = true, false
                    else
                        last_space = false
                    end
                end

            elseif ch == LBRACE and variable then
                -- "${name}": the brace belongs to the word

            else
                variable = false
                if ch == BSLASH then
                    quoted = true
                elseif ch == DOLLAR then
                    variable = true
                else
                    if d_quoted then
                        if ch == DQUOTE then
                            d_quoted, need_space, found = false, true, true
                        end
                    elseif s_quoted then
                        if ch == SQUOTE then
                            s_quoted, need_space, found = false, true, true
                        end
                    elseif is_space(ch) or ch == SEMI or ch == LBRACE then
                        last_space, found = true, true
                    end

                    if found then
                        args[#args + 1] = unescape(sub(s, start, pos - 2))
                        if ch == SEMI then
                            return "ok", pos
                        end
                        if ch == LBRACE then
                            return "block_start", pos
                        end
                        found = false
                    end
                end
            end
        end
    end
end

-- ngx_http_script_compile's check of a complex value such as a `hash` key:
-- "$" must name a variable ("$name", "${name}", "$1".."$9"). Whether the
-- variable exists is only known to nginx at run time; we do not check it.
local function check_complex_value(v)
    local i, n = 1, #v
    while i <= n do
        if byte(v, i) == DOLLAR then
            i = i + 1
            if i > n then
                return 'invalid variable name'
            end
            local c = byte(v, i)
            if c >= 49 and c <= 57 then
                i = i + 1
            else
                local bracket = false
                if c == LBRACE then
                    bracket = true
                    i = i + 1
                    if i > n then
                        return 'invalid variable name'
                    end
                end
                local name_len = 0
                while i <= n do
                    c = byte(v, i)
                    if c == RBRACE and bracket then
                        i = i + 1
                        bracket = false
                        break
                    end
                    if (c >= 65 and c <= 90) or (c >= 97 and c <= 122)
                        or (c >= 48 and c <= 57) or c == 95
                    then
                        i = i + 1
                        name_len = name_len + 1
                    else
                        break
                    end
                end
                if bracket then
                    return fmt('the closing bracket in "%s" variable is missing', v)
                end
                if name_len == 0 then
                    return 'invalid variable name'
                end
            end
        else
            i = i + 1
        end
    end
    return nil
end

-- The state one `upstream {}` block builds up while its statements are read.
local function new_block()
    return {
        servers = {},
        backup_ok = true, -- cleared by balancers that have no backup servers
        method = nil,     -- e.g. "ip_hash", "hash $x consistent"
        keepalive = nil,  -- canonical text of `keepalive N`
        seen = {},        -- directives that nginx refuses to see twice
    }
end

local function param_error(arg)
    return fmt('invalid parameter "%s"', arg)
end

-- The numeric `server` parameters (NAME=VALUE): each reader returns the
-- canonical text and the number, or nil for a value nginx refuses.
local SERVER_NUMBERS = {
    weight = function(v)
        local t, n = atoi(v)
        if n == 0 then
            return nil
        end
        return t, n
    end,
    max_conns = atoi,
    max_fails = atoi,
    fail_timeout = function(v) return parse_time(v, true) end,
}

-- ngx_http_upstream_server: parameters first, then the address, as nginx
-- does (so a bad parameter is reported before a bad address).
local function do_server(b, args)
    -- nginx's defaults, as text (t) and as numbers (n).
    local t = { weight = "1", max_conns = "0", max_fails = "1", fail_timeout = "10" }
    local n = { weight = 1, max_conns = 0, max_fails = 1, fail_timeout = 10 }
    local backup, down = false, false

    for i = 3, #args do
        local a = args[i]
        local name, value = a:match("^([%l_]+)=(.*)$")
        local read = name and SERVER_NUMBERS[name]
        if read then
            local text, num = read(value)
            if not text then
                return param_error(a)
            end
            t[name], n[name] = text, num
        elseif a == "backup" then
            if not b.backup_ok then
                return fmt('balancing method does not support parameter "%s"', a)
            end
            backup = true
        elseif a == "down" then
            down = true
        else
            return param_error(a)
        end
    end

    local addr, err = parse_addr(args[2])
    if not addr then
        return fmt('%s in upstream "%s"', err, args[2])
    end

    local s = b.servers
    s[#s + 1] = {
        name = addr.name, host = addr.host, port = addr.port, unix = addr.unix,
        weight = t.weight, max_conns = t.max_conns, max_fails = t.max_fails,
        fail_timeout = t.fail_timeout,
        weight_n = n.weight, max_conns_n = n.max_conns, max_fails_n = n.max_fails,
        fail_timeout_n = n.fail_timeout,
        backup = backup, down = down,
    }
    return nil
end

local function nargs_error(name)
    return fmt('invalid number of arguments in "%s" directive', name)
end

-- Balancing methods: like nginx they only warn when one replaces another,
-- and all but least_conn forbid `backup` on servers that follow.
local function set_method(b, text, backup_ok)
    b.method = text
    b.backup_ok = backup_ok
end

-- A method without parameters (ip_hash, least_conn).
local function plain_method(name, backup_ok)
    return function(b, args)
        if #args ~= 1 then
            return nargs_error(name)
        end
        set_method(b, name, backup_ok)
        return nil
    end
end

-- A directive nginx refuses to see twice, with one value that valid
-- checks; what names the value in the error ("number", "value").
local function once(name, valid, what)
    return function(b, args)
        if #args ~= 2 then
            return nargs_error(name)
        end
        if b.seen[name] then
            return fmt('"%s" directive is duplicate', name)
        end
        if not valid(args[2]) then
            return fmt('"%s" directive invalid %s', name, what)
        end
        b.seen[name] = true
        return nil
    end
end

local function msec(v)
    return parse_time(v, false)
end

-- Directive handlers: nil on success, else nginx's error text.
local directives = {
    server = function(b, args)
        if #args < 2 then
            return nargs_error("server")
        end
        return do_server(b, args)
    end,

    keepalive = function(b, args)
        if #args ~= 2 then
            return nargs_error("keepalive")
        end
        if b.keepalive then
            return '"keepalive" directive is duplicate'
        end
        local t, v = atoi(args[2])
        if not t or v == 0 then
            return fmt('invalid value "%s" in "keepalive" directive', args[2])
        end
        b.keepalive = t
        return nil
    end,

    keepalive_requests = once("keepalive_requests", atoi, "number"),
    -- keepalive_timeout and keepalive_time are ngx_conf_set_msec_slot.
    keepalive_timeout = once("keepalive_timeout", msec, "value"),
    keepalive_time = once("keepalive_time", msec, "value"),

    ip_hash = plain_method("ip_hash", false),
    least_conn = plain_method("least_conn", true),

    hash = function(b, args)
        if #args ~= 2 and #args ~= 3 then
            return nargs_error("hash")
        end
        local err = check_complex_value(args[2])
        if err then
            return err
        end
        if #args == 3 and args[3] ~= "consistent" then
            return param_error(args[3])
        end
        set_method(b, concat(args, " "), false)
        return nil
    end,

    random = function(b, args)
        if #args > 3 then
            return nargs_error("random")
        end
        if #args >= 2 and args[2] ~= "two" then
            return param_error(args[2])
        end
        if #args == 3 and args[3] ~= "least_conn" then
            return param_error(args[3])
        end
        set_method(b, concat(args, " "), false)
        return nil
    end,
}

local function do_statement(b, args)
    local h = directives[args[1]]
    if not h then
        if args[1] == "zone" then
            -- Valid in nginx.conf, but a shared memory zone cannot be added
            -- to a running nginx; real dyups has no sane answer either.
            return '"zone" is not supported in a dynamic upstream'
        end
        return fmt('unknown directive "%s"', args[1])
    end
    return h(b, args)
end

-- ngx_http_upstream_init_round_robin refuses an upstream without a primary
-- (non-backup) server: "no servers in upstream".
local function finish_block(b)
    for _, s in ipairs(b.servers) do
        if not s.backup then
            return { servers = b.servers, method = b.method, keepalive = b.keepalive }
        end
    end
    return nil, "no servers in upstream"
end

-- read_block reads the statements of one upstream into b from pos: up to
-- the end of a POST body, or (file_mode) up to the "}" of a block of the
-- persisted file. Returns the position after it, or nil and the error.
local function read_block(b, text, pos, file_mode)
    while true do
        local args = {}
        local rc, err
        rc, pos, err = read_token(text, pos, args, file_mode)
        if not rc then
            return nil, err
        end
        if rc == "eof" then
            if file_mode then
                return nil, 'unexpected end of file, expecting "}"'
            end
            return pos
        end
        if rc == "block_done" then
            if not file_mode then
                return nil, 'unexpected "}"'
            end
            return pos
        end
        if rc == "block_start" then
            if file_mode then
                return nil, 'unexpected "{"'
            end
            return nil, 'unexpected "{": block directives are not allowed here'
        end
        err = do_statement(b, args)
        if err then
            return nil, err
        end
    end
end

-- parse_body(text) parses a POST body: the inside of an `upstream {}` block.
-- Returns the upstream { servers = {...}, method =, keepalive = } or nil and
-- an error message in nginx's words.
function _M.parse_body(text)
    local b = new_block()
    local pos, err = read_block(b, text, 1, false)
    if not pos then
        return nil, err
    end
    return finish_block(b)
end

-- parse_file(text) parses the file SwallowKeeper persists and nginx
-- `include`s: `upstream NAME { ... }` blocks and comments, nothing else.
-- Returns an array of { name =, upstream = } in file order, or nil and an
-- error naming the upstream. All or nothing: one bad block fails the file.
function _M.parse_file(text)
    local out, names = {}, {}
    local pos = 1
    while true do
        local args = {}
        local rc, err
        rc, pos, err = read_token(text, pos, args, true)
        if not rc then
            return nil, err
        end
        if rc == "eof" then
            break
        end
        if rc ~= "block_start" or args[1] ~= "upstream" or #args ~= 2 then
            if rc == "block_done" then
                return nil, 'unexpected "}"'
            end
            return nil, fmt('unexpected "%s": only "upstream NAME { ... }" blocks are allowed',
                            args[1] or "")
        end

        local name = args[2]
        local key = lower(name)
        if names[key] then
            return nil, fmt('duplicate upstream "%s"', name)
        end
        names[key] = true

        local b = new_block()
        pos, err = read_block(b, text, pos, true)
        if not pos then
            return nil, fmt('upstream "%s": %s', name, err)
        end

        local ups
        ups, err = finish_block(b)
        if not ups then
            return nil, fmt('upstream "%s": %s', name, err)
        end
        out[#out + 1] = { name = name, upstream = ups }
    end
    return out
end

return _M
