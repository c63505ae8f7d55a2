-- handle:streamInfo(), its dynamicMetadata() and filterState(), and the
-- downstream TLS connection (streamInfo():downstreamSslConnection(),
-- handle:connection():ssl()).
local ffi = require("ffi")
local base = require("resty_ffi.envoy.api")
local metadata = require("resty_ffi.envoy.metadata")

local api, check, buf = base.api, base.check, base.buf
local ffi_str = ffi.string
local next, pairs = next, pairs

-- Attribute ids of api.attribute (api/stream_info.rs).
local PROTOCOL, SOURCE_ADDRESS, DESTINATION_ADDRESS, DIRECT_REMOTE_ADDRESS = 0, 1, 2, 3
local ROUTE_NAME, VIRTUAL_CLUSTER_NAME, REQUESTED_SERVER_NAME, TLS_VERSION = 4, 5, 6, 7
local SUBJECT_PEER, SUBJECT_LOCAL, DNS_SAN_PEER, DNS_SAN_LOCAL, URI_SAN_PEER, URI_SAN_LOCAL, SHA256_PEER =
  8, 9, 10, 11, 12, 13, 14
local NOT_TLS = -3

local function attribute(ctx, id)
  if check(api.attribute(ctx, id, buf)) == 1 then
    return ffi_str(buf[0].ptr, buf[0].len)
  end
  return nil
end

-- The downstream TLS connection --------------------------------------------------

local Ssl = base.class("Ssl")

function Ssl:peerCertificatePresented()
  return check(api.peer_certificate_presented(self.ctx)) == 1
end

function Ssl:tlsVersion()
  return attribute(self.ctx, TLS_VERSION) or ""
end

function Ssl:subjectPeerCertificate()
  return attribute(self.ctx, SUBJECT_PEER) or ""
end

function Ssl:subjectLocalCertificate()
  return attribute(self.ctx, SUBJECT_LOCAL) or ""
end

function Ssl:sha256PeerCertificateDigest()
  return attribute(self.ctx, SHA256_PEER) or ""
end

-- SANs: Envoy 1.40's ABI gives the first of each kind.
local function sans(ctx, id)
  local san = attribute(ctx, id)
  return san and san ~= "" and { san } or {}
end

function Ssl:dnsSansPeerCertificate()
  return sans(self.ctx, DNS_SAN_PEER)
end

function Ssl:dnsSansLocalCertificate()
  return sans(self.ctx, DNS_SAN_LOCAL)
end

function Ssl:uriSanPeerCertificate()
  return sans(self.ctx, URI_SAN_PEER)
end

function Ssl:uriSanLocalCertificate()
  return sans(self.ctx, URI_SAN_LOCAL)
end

local M = {}

-- The TLS connection object, or nil for plain text.
function M.ssl(ctx)
  if check(api.peer_certificate_presented(ctx)) == NOT_TLS then
    return nil
  end
  return base.new(Ssl, { ctx = ctx })
end

-- Stream info ---------------------------------------------------------------------

local StreamInfo = base.class("StreamInfo")

function StreamInfo:protocol()
  return attribute(self.ctx, PROTOCOL)
end

function StreamInfo:downstreamLocalAddress()
  return attribute(self.ctx, DESTINATION_ADDRESS)
end

-- The local address of the connection: Envoy 1.40's ABI gives the local
-- address after any original-destination restore, the same in most setups.
function StreamInfo:downstreamDirectLocalAddress()
  return attribute(self.ctx, DESTINATION_ADDRESS)
end

function StreamInfo:downstreamRemoteAddress()
  return attribute(self.ctx, SOURCE_ADDRESS)
end

function StreamInfo:downstreamDirectRemoteAddress()
  return attribute(self.ctx, DIRECT_REMOTE_ADDRESS)
end

function StreamInfo:routeName()
  return attribute(self.ctx, ROUTE_NAME) or ""
end

function StreamInfo:virtualClusterName()
  return attribute(self.ctx, VIRTUAL_CLUSTER_NAME) or ""
end

function StreamInfo:requestedServerName()
  return attribute(self.ctx, REQUESTED_SERVER_NAME) or ""
end

function StreamInfo:downstreamSslConnection()
  return M.ssl(self.ctx)
end

-- Dynamic metadata ------------------------------------------------------------

local DynamicMetadata = base.class("DynamicMetadata")

-- What the script stored in namespace `ns` (see metadata.lua).
local function stored(self, ns)
  local store = base.store(self.ctx)
  local namespaces = store.dynamic_metadata
  if not namespaces then
    namespaces = {}
    store.dynamic_metadata = namespaces
  end
  local values = namespaces[ns]
  if not values then
    values = {}
    namespaces[ns] = values
  end
  return values
end

function StreamInfo:dynamicMetadata()
  return base.new(DynamicMetadata, { ctx = self.ctx })
end

-- A table of the namespace's values; nothing when the namespace is empty.
function DynamicMetadata:get(ns)
  ns = base.string_arg(ns, 2)
  local values = metadata.namespace(self.ctx, metadata.DYNAMIC, ns, stored(self, ns))
  if values then
    return values
  end
end

function DynamicMetadata:set(ns, key, value)
  ns, key = base.string_arg(ns, 2), base.string_arg(key, 3)
  metadata.set(self.ctx, ns, key, value, stored(self, ns))
end

-- Namespace name -> table of its values.
function DynamicMetadata:__pairs()
  local all = {}
  for _, ns in pairs(metadata.namespaces(self.ctx, metadata.DYNAMIC)) do
    all[ns] = metadata.namespace(self.ctx, metadata.DYNAMIC, ns, stored(self, ns))
  end
  return next, all, nil
end

-- Filter state ----------------------------------------------------------------------

local FilterState = base.class("FilterState")

function StreamInfo:filterState()
  return base.new(FilterState, { ctx = self.ctx })
end

-- The object named `name` as a string; no value if there is none. A field
-- of an object cannot be read through Envoy 1.40's ABI: no value either.
function FilterState:get(name, field)
  name = base.string_arg(name, 2)
  if field ~= nil then
    return
  end
  if check(api.filter_state_get(self.ctx, name, #name, buf)) == 1 then
    return ffi_str(buf[0].ptr, buf[0].len)
  end
end

-- The factory of plain strings.
local STRING_FACTORY = "envoy.string"

-- Stores `value` as object `name`, made by the factory `factory`: the
-- string factory, or the factory registered under the object's own name
-- (what Envoy 1.40's ABI can reach).
function FilterState:set(name, factory, value)
  name, factory, value = base.string_arg(name, 2), base.string_arg(factory, 3), base.string_arg(value, 4)
  if factory ~= STRING_FACTORY and factory ~= name then
    base.fail("resty_ffi: filterState():set() takes the factory " .. STRING_FACTORY
      .. " or the one named as the object (Envoy 1.40's ABI)")
  end
  local typed = factory == STRING_FACTORY and 0 or 1
  if check(api.filter_state_set(self.ctx, typed, name, #name, value, #value)) == 0 then
    if typed == 1 then
      base.fail("'" .. factory .. "' does not have an object factory")
    end
    base.fail("resty_ffi: Envoy refused filter state object '" .. name .. "' (a read-only one exists)")
  end
end

-- What handle:streamInfo() returns, for stream `ctx`.
function M.new(ctx)
  return base.new(StreamInfo, { ctx = ctx })
end

base.scoped(Ssl)
base.scoped(StreamInfo)
base.scoped(DynamicMetadata)
base.scoped(FilterState)

return M
