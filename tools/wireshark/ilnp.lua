-- ILNPv6 overlay dissector for Wireshark and tshark (docs/PROTOCOL.md is the wire format).
--
-- Decodes the overlay packet that one UDP datagram of the underlay carries: the 40-byte
-- ILNPv6 header, the [ext] destination options (nonce, sequence number, signature), STP,
-- discovery and locator updates. STP payloads of the stream relay (QUIC over STP) go to
-- Wireshark's QUIC dissector.
--
-- Use it with tshark:
--     tshark -X lua_script:tools/wireshark/ilnp.lua -r capture.pcap
--     tshark -X lua_script:tools/wireshark/ilnp.lua -r capture.pcap -Y 'ilnp.lu.type == 1' \
--            -T fields -e ilnp.src_nid -e ilnp.lu.locator
-- live, from a node (ilnp-tap --pcap writes the node's packets as the underlay's datagrams):
--     ilnp-tap --pcap - | wireshark -X lua_script:tools/wireshark/ilnp.lua -k -i -
-- or for good: copy (or link) this file into ~/.local/lib/wireshark/plugins/ (Wireshark 4.x).
--
-- The overlay's UDP port (underlay.port, default 10000) is a preference:
-- Edit > Preferences > Protocols > ILNP, or `tshark -o ilnp.udp_port:10001`. On other
-- ports a UDP heuristic takes datagrams whose ILNPv6 header holds together (version,
-- payload length, next header); `--disable-heuristic ilnp_udp` turns it off. Other
-- preferences: STP ports always handed to QUIC (ilnp.quic_ports), and whether QUIC is
-- recognised by its long header (ilnp.quic_heuristic, on).
--
-- Fields: ilnp.version ilnp.nh ilnp.hop ilnp.src_loc ilnp.src_nid ilnp.dst_loc ilnp.dst_nid
-- (addresses as text, ffff:0:0:a), ilnp.nonce ilnp.seq ilnp.sig, stp.srcport stp.dstport,
-- ilnp.disc.nid ilnp.disc.loc ilnp.disc.solicit ilnp.disc.hostname, ilnp.lu.type
-- ilnp.lu.locator; all of them: `tshark -G fields -X lua_script:ilnp.lua | awk -F'\t' '$5 == "ilnp"'`.
-- A malformed packet is decoded as far as it goes and flagged with expert info
-- (ilnp.expert.*); the dissector never raises a Lua error on any input.

local ilnp = Proto("ilnp", "ILNPv6 overlay")

local NH_STP, NH_DISCOVERY, NH_LU, NH_DESTOPTS = 42, 43, 44, 60
local OPT_PAD1, OPT_PADN, OPT_NONCE, OPT_SEQ, OPT_SIG = 0x00, 0x01, 0x8B, 0x1E, 0x3E
local HEADER_LEN = 40
local DISC_FIXED = 17
local SIG_LEN = 96

local nh_names = { [NH_STP] = "STP", [NH_DISCOVERY] = "Discovery", [NH_LU] = "Locator update",
                   [NH_DESTOPTS] = "Destination options" }
local opt_names = { [OPT_PAD1] = "Pad1", [OPT_PADN] = "PadN", [OPT_NONCE] = "ILNP nonce",
                    [OPT_SEQ] = "Sequence number", [OPT_SIG] = "Signature" }
local solicit_names = { [0] = "advertisement", [1] = "solicitation" }
local lu_names = { [0] = "ack", [1] = "update" }

local f = {
    version = ProtoField.uint8("ilnp.version", "Version", base.DEC, nil, 0xF0),
    tclass = ProtoField.uint32("ilnp.tclass", "Traffic class", base.HEX, nil, 0x0FF00000),
    flow = ProtoField.uint32("ilnp.flow", "Flow label", base.HEX, nil, 0x000FFFFF),
    plen = ProtoField.uint16("ilnp.plen", "Payload length", base.DEC),
    nh = ProtoField.uint8("ilnp.nh", "Next header", base.DEC, nh_names),
    hop = ProtoField.uint8("ilnp.hop", "Hop limit", base.DEC),
    src_loc = ProtoField.string("ilnp.src_loc", "Source locator"),
    src_nid = ProtoField.string("ilnp.src_nid", "Source NID"),
    dst_loc = ProtoField.string("ilnp.dst_loc", "Destination locator"),
    dst_nid = ProtoField.string("ilnp.dst_nid", "Destination NID"),
    src_ilv = ProtoField.string("ilnp.src", "Source I-LV"),
    dst_ilv = ProtoField.string("ilnp.dst", "Destination I-LV"),
    crypto_nid = ProtoField.bool("ilnp.src_nid_crypto", "Source NID is self-certifying"),
    -- [ext] destination options
    opts = ProtoField.none("ilnp.destopts", "Destination options"),
    opts_nh = ProtoField.uint8("ilnp.destopts.nh", "Next header", base.DEC, nh_names),
    opts_len = ProtoField.uint8("ilnp.destopts.len", "Header extension length", base.DEC),
    opt_type = ProtoField.uint8("ilnp.opt.type", "Option type", base.HEX, opt_names),
    opt_len = ProtoField.uint8("ilnp.opt.len", "Option length", base.DEC),
    opt_data = ProtoField.bytes("ilnp.opt.data", "Option data"),
    nonce = ProtoField.bytes("ilnp.nonce", "Nonce"),
    seq = ProtoField.uint32("ilnp.seq", "Sequence number", base.DEC),
    sig = ProtoField.bytes("ilnp.sig", "Signature option"),
    sig_key = ProtoField.bytes("ilnp.sig.key", "Ed25519 public key"),
    sig_value = ProtoField.bytes("ilnp.sig.signature", "Ed25519 signature"),
    -- STP
    stp = ProtoField.none("ilnp.stp", "STP"),
    stp_src = ProtoField.uint16("stp.srcport", "Source port", base.DEC),
    stp_dst = ProtoField.uint16("stp.dstport", "Destination port", base.DEC),
    stp_data = ProtoField.bytes("ilnp.stp.data", "Data"),
    -- discovery
    disc = ProtoField.none("ilnp.disc", "Discovery"),
    disc_nid = ProtoField.string("ilnp.disc.nid", "NID"),
    disc_loc = ProtoField.string("ilnp.disc.loc", "Locator"),
    disc_solicit = ProtoField.uint8("ilnp.disc.solicit", "Solicitation", base.DEC, solicit_names),
    disc_hostname = ProtoField.string("ilnp.disc.hostname", "Hostname"),
    -- locator update
    lu = ProtoField.none("ilnp.lu", "Locator update"),
    lu_type = ProtoField.uint8("ilnp.lu.type", "Type", base.DEC, lu_names),
    lu_locator = ProtoField.string("ilnp.lu.locator", "New locator"),
    payload = ProtoField.bytes("ilnp.payload", "Payload"),
}
ilnp.fields = {}
for _, field in pairs(f) do
    table.insert(ilnp.fields, field)
end

local e = {
    short = ProtoExpert.new("ilnp.expert.short", "Truncated ILNP packet",
                            expert.group.MALFORMED, expert.severity.ERROR),
    length = ProtoExpert.new("ilnp.expert.length", "Payload length disagrees with the datagram",
                             expert.group.MALFORMED, expert.severity.ERROR),
    version = ProtoExpert.new("ilnp.expert.version", "Version is neither 0 nor 6 (dropped by nodes)",
                              expert.group.MALFORMED, expert.severity.ERROR),
    nh = ProtoExpert.new("ilnp.expert.nh", "Unknown next header (dropped by nodes)",
                         expert.group.PROTOCOL, expert.severity.WARN),
    opts = ProtoExpert.new("ilnp.expert.destopts", "Malformed destination options",
                           expert.group.MALFORMED, expert.severity.ERROR),
    opt_unknown = ProtoExpert.new("ilnp.expert.opt_unknown", "Unknown option that must not be skipped",
                                  expert.group.PROTOCOL, expert.severity.WARN),
    stp = ProtoExpert.new("ilnp.expert.stp", "Malformed STP segment",
                          expert.group.MALFORMED, expert.severity.ERROR),
    disc = ProtoExpert.new("ilnp.expert.disc", "Malformed discovery body",
                           expert.group.MALFORMED, expert.severity.ERROR),
    lu = ProtoExpert.new("ilnp.expert.lu", "Malformed locator update",
                         expert.group.MALFORMED, expert.severity.ERROR),
    internal = ProtoExpert.new("ilnp.expert.internal", "ILNP dissector error",
                               expert.group.MALFORMED, expert.severity.ERROR),
}
ilnp.experts = { e.short, e.length, e.version, e.nh, e.opts, e.opt_unknown, e.stp, e.disc, e.lu,
                 e.internal }

ilnp.prefs.udp_port = Pref.uint("UDP port", 10000, "The overlay's UDP port on the underlay (underlay.port)")
ilnp.prefs.quic_ports = Pref.range("QUIC STP ports", "",
    "STP ports whose payloads are always QUIC (the stream relay's served ports)", 65535)
ilnp.prefs.quic_heuristic = Pref.bool("Recognise QUIC", true,
    "Hand STP payloads to QUIC when one starts with a QUIC version 1 long header, and later "
    .. "payloads between the same two NIDs and STP ports too")

-- 64 bits as 4 hex groups without leading zeros: ffff:0:0:a (docs/PROTOCOL.md, Names)
local function addr64(tvb, offset)
    return string.format("%x:%x:%x:%x", tvb(offset, 2):uint(), tvb(offset + 2, 2):uint(),
                         tvb(offset + 4, 2):uint(), tvb(offset + 6, 2):uint())
end

local quic_dissector = Dissector.get("quic")
local data_dissector = Dissector.get("data")
-- STP flows seen carrying QUIC (by NIDs and ports, both directions); a capture holds few
local quic_flows = {}
-- the quic_ports preference as a set: Wireshark hands a range preference to Lua as text
local quic_ports = {}

local function parse_ports(text)
    local set = {}
    for part in string.gmatch(text or "", "[^,%s]+") do
        local first, last = string.match(part, "^(%d+)-(%d+)$")
        if first == nil then
            first = string.match(part, "^(%d+)$")
            last = first
        end
        if first then
            for port = tonumber(first), math.min(tonumber(last), 65535) do
                set[port] = true
            end
        end
    end
    return set
end

local function flow_key(a_nid, a_port, b_nid, b_port)
    if a_nid < b_nid or (a_nid == b_nid and a_port <= b_port) then
        return a_nid .. "/" .. a_port .. "|" .. b_nid .. "/" .. b_port
    end
    return b_nid .. "/" .. b_port .. "|" .. a_nid .. "/" .. a_port
end

local function looks_like_quic_initial(tvb, offset, len)
    -- long header (form and fixed bits set) of QUIC version 1 (RFC 9000 17.2)
    return len >= 7 and bit32.band(tvb(offset, 1):uint(), 0xC0) == 0xC0
        and tvb(offset + 1, 4):uint() == 1
end

local function is_quic(ctx, tvb, offset, len, sport, dport)
    if quic_dissector == nil or len < 1 then
        return false
    end
    if quic_ports[sport] or quic_ports[dport] then
        return true
    end
    if not ilnp.prefs.quic_heuristic then
        return false
    end
    local key = flow_key(ctx.src_nid, sport, ctx.dst_nid, dport)
    if quic_flows[key] then
        return bit32.band(tvb(offset, 1):uint(), 0x40) == 0x40 -- QUIC's fixed bit
    end
    if looks_like_quic_initial(tvb, offset, len) then
        quic_flows[key] = true
        return true
    end
    return false
end

local function dissect_stp(ctx, tvb, offset, pinfo, tree)
    local len = tvb:len() - offset
    local sub = tree:add(f.stp, tvb(offset, len))
    sub:set_text("STP")
    if len < 4 then
        sub:add_proto_expert_info(e.stp, "STP segment of " .. len .. " bytes is shorter than its 4-byte header")
        return "STP (truncated)"
    end
    local sport, dport = tvb(offset, 2):uint(), tvb(offset + 2, 2):uint()
    sub:add(f.stp_src, tvb(offset, 2))
    sub:add(f.stp_dst, tvb(offset + 2, 2))
    sub:append_text(string.format(", %d -> %d, %d bytes", sport, dport, len - 4))
    local info = string.format("STP %d -> %d Len=%d", sport, dport, len - 4)
    if len > 4 then
        local data = tvb(offset + 4, len - 4)
        if is_quic(ctx, tvb, offset + 4, len - 4, sport, dport) then
            ctx.quic = data:tvb()
        else
            sub:add(f.stp_data, data)
        end
    end
    return info
end

local function dissect_discovery(ctx, tvb, offset, pinfo, tree)
    local len = tvb:len() - offset
    local sub = tree:add(f.disc, tvb(offset, len))
    sub:set_text("Discovery")
    if len < DISC_FIXED then
        sub:add_proto_expert_info(e.disc, "discovery body of " .. len .. " bytes, need at least " .. DISC_FIXED)
        return "Discovery (truncated)"
    end
    local nid, loc, flag = addr64(tvb, offset), addr64(tvb, offset + 8), tvb(offset + 16, 1):uint()
    sub:add(f.disc_nid, tvb(offset, 8), nid)
    sub:add(f.disc_loc, tvb(offset + 8, 8), loc)
    local flag_item = sub:add(f.disc_solicit, tvb(offset + 16, 1))
    if flag > 1 then
        flag_item:add_proto_expert_info(e.disc, "solicitation flag " .. flag .. " is neither 0 nor 1")
    end
    local hostname = ""
    if len > DISC_FIXED then
        local name = tvb(offset + DISC_FIXED, len - DISC_FIXED)
        hostname = name:string(ENC_UTF_8)
        sub:add(f.disc_hostname, name, hostname)
    else
        sub:add_proto_expert_info(e.disc, "discovery body without a hostname")
    end
    if nid ~= ctx.src_nid then
        sub:add_proto_expert_info(e.disc, "body NID " .. nid .. " is not the source NID (dropped by nodes)")
    end
    local kind = solicit_names[flag] or ("flag " .. flag)
    sub:append_text(string.format(": %s, %s (%s) on %s", kind, hostname, nid, loc))
    return string.format("Discovery %s %s (%s) on %s", kind, hostname, nid, loc)
end

local function dissect_locator_update(ctx, tvb, offset, pinfo, tree)
    local len = tvb:len() - offset
    local sub = tree:add(f.lu, tvb(offset, math.max(len, 0)))
    sub:set_text("Locator update")
    if len < 1 then
        sub:add_proto_expert_info(e.lu, "empty locator update body")
        return "Locator update (empty)"
    end
    local kind = tvb(offset, 1):uint()
    sub:add(f.lu_type, tvb(offset, 1))
    if kind == 0 then
        sub:set_text("Locator update ack")
        if len ~= 1 then
            sub:add_proto_expert_info(e.lu, "ack with " .. (len - 1) .. " trailing bytes")
        end
        return "Locator update ack"
    end
    if kind ~= 1 then
        sub:add_proto_expert_info(e.lu, string.format("unknown locator update type 0x%02x", kind))
        return string.format("Locator update (type 0x%02x)", kind)
    end
    local rest = len - 1
    if rest == 0 or rest % 8 ~= 0 then
        sub:add_proto_expert_info(e.lu, "update body of " .. len .. " bytes is not 1 + 8 x locators")
    end
    local locs = {}
    local at = offset + 1
    while at + 8 <= tvb:len() do
        local loc = addr64(tvb, at)
        sub:add(f.lu_locator, tvb(at, 8), loc)
        table.insert(locs, loc)
        at = at + 8
    end
    local text = table.concat(locs, ",")
    sub:append_text(": " .. text)
    return "Locator update to " .. text
end

local upper = { [NH_STP] = dissect_stp, [NH_DISCOVERY] = dissect_discovery, [NH_LU] = dissect_locator_update }

-- [ext] RFC 8200 destination options: returns the inner next header and where it starts,
-- or nil when the header is malformed (an expert item says why)
local function dissect_destopts(ctx, tvb, offset, tree)
    local avail = tvb:len() - offset
    if avail < 8 then
        local item = tree:add(f.opts, tvb(offset, avail))
        item:add_proto_expert_info(e.opts, "destination options header shorter than 8 bytes")
        return nil
    end
    local size = (tvb(offset + 1, 1):uint() + 1) * 8
    local sub = tree:add(f.opts, tvb(offset, math.min(size, avail)))
    sub:set_text("Destination options")
    sub:add(f.opts_nh, tvb(offset, 1))
    sub:add(f.opts_len, tvb(offset + 1, 1))
    if size > avail then
        sub:add_proto_expert_info(e.opts, "destination options header of " .. size .. " bytes but only "
                                  .. avail .. " present")
        return nil
    end
    local stop = offset + size
    local at = offset + 2
    while at < stop do
        local kind = tvb(at, 1):uint()
        if kind == OPT_PAD1 then
            at = at + 1
        else
            if at + 2 > stop then
                sub:add_proto_expert_info(e.opts, "option truncated")
                return nil
            end
            local olen = tvb(at + 1, 1):uint()
            local data_at = at + 2
            if data_at + olen > stop then
                sub:add_proto_expert_info(e.opts, "option overruns its header")
                return nil
            end
            if kind == OPT_NONCE then
                local item = sub:add(f.nonce, tvb(data_at, olen))
                if olen ~= 4 and olen ~= 12 then
                    item:add_proto_expert_info(e.opts, "nonce option of " .. olen .. " bytes (must be 4 or 12)")
                end
                ctx.nonce = true
            elseif kind == OPT_SEQ then
                if olen == 4 then
                    sub:add(f.seq, tvb(data_at, 4))
                    ctx.seq = tvb(data_at, 4):uint()
                else
                    local item = sub:add(f.opt_data, tvb(at, olen + 2))
                    item:add_proto_expert_info(e.opts, "sequence option of " .. olen .. " bytes (must be 4)")
                end
            elseif kind == OPT_SIG then
                local item = sub:add(f.sig, tvb(data_at, olen))
                if olen == SIG_LEN then
                    item:add(f.sig_key, tvb(data_at, 32))
                    item:add(f.sig_value, tvb(data_at + 32, 64))
                    ctx.signed = true
                else
                    item:add_proto_expert_info(e.opts, "signature option of " .. olen .. " bytes (must be "
                                               .. SIG_LEN .. ")")
                end
            elseif kind ~= OPT_PADN then
                local item = sub:add(f.opt_type, tvb(at, 1))
                sub:add(f.opt_len, tvb(at + 1, 1))
                if olen > 0 then
                    sub:add(f.opt_data, tvb(data_at, olen))
                end
                if bit32.band(kind, 0xC0) ~= 0 then
                    item:add_proto_expert_info(e.opt_unknown)
                end
            end
            at = data_at + olen
        end
    end
    return tvb(offset, 1):uint(), stop
end

local function dissect_packet(tvb, pinfo, tree, ctx)
    local size = tvb:len()
    local root = tree:add(ilnp, tvb(0, size))
    pinfo.cols.protocol = "ILNPv6"
    if size < HEADER_LEN then
        root:add_proto_expert_info(e.short, "datagram of " .. size .. " bytes is shorter than the 40-byte header")
        pinfo.cols.info = "ILNPv6 (truncated)"
        return
    end
    local version = bit32.rshift(tvb(0, 1):uint(), 4)
    local version_item = root:add(f.version, tvb(0, 1))
    if version ~= 0 and version ~= 6 then
        version_item:add_proto_expert_info(e.version)
    end
    root:add(f.tclass, tvb(0, 4))
    root:add(f.flow, tvb(0, 4))
    local plen = tvb(4, 2):uint()
    local plen_item = root:add(f.plen, tvb(4, 2))
    if plen ~= size - HEADER_LEN then
        plen_item:add_proto_expert_info(e.length, "payload length " .. plen .. " but " .. (size - HEADER_LEN)
                                        .. " bytes follow the header")
    end
    local nh = tvb(6, 1):uint()
    root:add(f.nh, tvb(6, 1))
    root:add(f.hop, tvb(7, 1))
    local src_loc, src_nid = addr64(tvb, 8), addr64(tvb, 16)
    local dst_loc, dst_nid = addr64(tvb, 24), addr64(tvb, 32)
    ctx.src_nid, ctx.dst_nid = src_nid, dst_nid
    root:add(f.src_loc, tvb(8, 8), src_loc)
    local nid_item = root:add(f.src_nid, tvb(16, 8), src_nid)
    nid_item:add(f.crypto_nid, tvb(16, 1), bit32.rshift(tvb(16, 1):uint(), 4) == 3)
    root:add(f.dst_loc, tvb(24, 8), dst_loc)
    root:add(f.dst_nid, tvb(32, 8), dst_nid)
    local src, dst = src_loc .. ":" .. src_nid, dst_loc .. ":" .. dst_nid
    root:add(f.src_ilv, tvb(8, 16), src):set_generated()
    root:add(f.dst_ilv, tvb(24, 16), dst):set_generated()
    root:append_text(string.format(", %s -> %s, hop %d", src, dst, tvb(7, 1):uint()))

    local offset = HEADER_LEN
    local inner = nh
    local opts_text = ""
    if nh == NH_DESTOPTS then
        local next_at
        inner, next_at = dissect_destopts(ctx, tvb, offset, root)
        if inner == nil then
            pinfo.cols.info = string.format("%s -> %s (malformed destination options)", src, dst)
            return
        end
        offset = next_at
        if ctx.seq then
            opts_text = " seq=" .. ctx.seq
        end
        if ctx.signed then
            opts_text = opts_text .. " signed"
        end
    end
    local info
    local handler = upper[inner]
    if handler then
        info = handler(ctx, tvb, offset, pinfo, root)
    else
        root:add_proto_expert_info(e.nh, "next header " .. inner .. " is not STP (42), discovery (43) or a "
                                   .. "locator update (44)")
        if tvb:len() > offset then
            root:add(f.payload, tvb(offset, tvb:len() - offset))
        end
        info = "next header " .. inner
    end
    -- the underlay's addresses stay in the Source and Destination columns
    pinfo.cols.info = string.format("%s -> %s %s%s", src, dst, info, opts_text)
end

function ilnp.dissector(tvb, pinfo, tree)
    local ctx = {}
    local ok, err = pcall(dissect_packet, tvb, pinfo, tree, ctx)
    if not ok then
        -- a bug here must not hide the packet: say so, never raise
        tree:add_proto_expert_info(e.internal, "ILNP dissector error: " .. tostring(err))
        return tvb:len()
    end
    if ctx.quic then
        -- QUIC adds its own summary after ours instead of replacing it
        pinfo.cols.info:append(" | ")
        pinfo.cols.info:fence()
        -- what QUIC cannot read (a truncated packet) it flags itself; its exception
        -- comes back here as a Lua error, which must not end our dissection
        pcall(Dissector.call, quic_dissector, ctx.quic, pinfo, tree)
    end
    return tvb:len()
end

-- On another port (a locator on an underlay of its own, [underlay.locators] in the
-- config), a datagram is taken for ILNP when its header holds together: version 0 or 6,
-- the payload length the datagram's, a next header the overlay speaks.
local function heuristic(tvb, pinfo, tree)
    local size = tvb:len()
    if size < HEADER_LEN then
        return false
    end
    local version = bit32.rshift(tvb(0, 1):uint(), 4)
    local nh = tvb(6, 1):uint()
    if (version ~= 0 and version ~= 6) or tvb(4, 2):uint() ~= size - HEADER_LEN
            or not (upper[nh] or nh == NH_DESTOPTS) then
        return false
    end
    ilnp.dissector(tvb, pinfo, tree)
    return true
end
ilnp:register_heuristic("udp", heuristic)

local registered_port = nil

local function register_port()
    local udp = DissectorTable.get("udp.port")
    if registered_port then
        udp:remove(registered_port, ilnp)
    end
    registered_port = ilnp.prefs.udp_port
    udp:add(registered_port, ilnp)
end

function ilnp.prefs_changed()
    quic_ports = parse_ports(ilnp.prefs.quic_ports)
    if registered_port ~= ilnp.prefs.udp_port then
        register_port()
    end
end

function ilnp.init()
    quic_flows = {} -- a new capture (or a re-dissection) learns its flows afresh
end

register_port()
