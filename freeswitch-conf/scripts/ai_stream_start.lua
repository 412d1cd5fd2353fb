-- Start a call's audio fork and wait until the gateway has accepted it.
--
-- `uuid_audio_stream start` answers +OK before the WebSocket connects, so the dialplan alone cannot
-- tell a working stream from a gateway that is down or draining (503 on the upgrade). For each gateway
-- (the ready ones first, from ai_gateways_ready kept by ai_gateway_watchdog.lua, then the rest of
-- gateway_stream_urls) this script asks its readiness URL, starts the stream and waits for
-- mod_audio_stream's own verdict (CUSTOM mod_audio_stream::connect or ::error for this channel); on
-- a refusal it tries the next gateway.
-- Result in the channel variable ai_stream_result: "+OK <url>" or "-ERR <why>".
--
-- Two ways to run it:
--   dialplan:  <action application="lua" data="$${conf_dir}/scripts/ai_stream_start.lua"/>
--   API:       lua <path>/ai_stream_start.lua <uuid>   (restart after a lost stream, ai_stream_lost.lua)
-- Uses the channel variables ai_stream_rate (8k|16k) and ai_stream_metadata set by the dialplan, and
-- ai_stream_mix (mono unless "mixed").
--
-- The stream URL carries the call's tenant, profile and dialled number (ai_tenant, ai_profile, ai_callee)
-- as its query, percent-encoded: the gateway reads them at the WebSocket upgrade, before the metadata
-- arrives, to hold the call against its tenant's own inbound cap and refuse it there exactly as at the
-- global cap (gateway/admission.py TenantAdmission, docs/outbound.md#tenants).

local api = freeswitch.API()
local uuid = (session and session:get_uuid()) or (argv and argv[1])
if uuid == nil or uuid == "" then
  freeswitch.consoleLog("ERR", "ai_stream_start.lua: no channel\n")
  return
end

local function getvar(name)
  if session then
    return session:getVariable(name)
  end
  local value = api:execute("uuid_getvar", uuid .. " " .. name)
  if value == nil or value == "_undef_" or string.sub(value, 1, 4) == "-ERR" then
    return nil
  end
  return value
end

local function setvar(name, value)
  if session then
    session:setVariable(name, value)
  else
    api:execute("uuid_setvar", uuid .. " " .. name .. " " .. value)
  end
end

local function split(text, into, seen)
  for item in string.gmatch(text or "", "[^,%s]+") do
    if not seen[item] then
      seen[item] = true
      into[#into + 1] = item
    end
  end
end

-- The readiness URL of each gateway (gateway_ready_urls, same order as gateway_stream_urls).
local ready_url = {}
do
  local streams, probes = {}, {}
  split(freeswitch.getGlobalVariable("gateway_stream_urls"), streams, {})
  split(freeswitch.getGlobalVariable("gateway_ready_urls"), probes, {})
  for i, stream in ipairs(streams) do
    ready_url[stream] = probes[i]
  end
end

local rate = getvar("ai_stream_rate") or "8k"
-- mono: what the channel receives (the caller's voice). mixed: both directions, for a listen-only AI
-- (the handoff note-taker, set by the gateway on a bridged call). Anything else is mono.
local mix = getvar("ai_stream_mix")
if mix ~= "mixed" then
  mix = "mono"
end
local metadata = getvar("ai_stream_metadata") or "{}"

-- The call's tenant, profile and dialled number as a URL query (see the top of this file).
local function urlencode(text)
  return (string.gsub(text, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
-- Not for a listen-only stream (mixed: the handoff note-taker on a call already admitted); an outbound
-- call (ai_outbound_id) says so, as the tenant's outbound cap already holds it.
local query = {}
if mix ~= "mixed" then
  for _, key in ipairs({"tenant", "profile", "callee"}) do
    local value = getvar("ai_" .. key)
    if value ~= nil and value ~= "" then
      query[#query + 1] = key .. "=" .. urlencode(string.sub(value, 1, 128))
    end
  end
  local outbound = getvar("ai_outbound_id")
  if outbound ~= nil and outbound ~= "" then
    query[#query + 1] = "direction=outbound"
  end
end
local suffix = ""
if #query > 0 then
  suffix = "?" .. table.concat(query, "&")
end

-- Asked per call, right before the start: the voxcom edition answers the channel in `start` (the
-- upstream one pre-answers), so a gateway that would refuse the stream (down, draining) must be
-- skipped before, or the caller is answered and then dropped. Asked with the call's query: 429 means
-- the call's tenant is at its own inbound cap on that gateway. Returns the HTTP status ("200" = go).
local function probe(url, again)
  local ready = ready_url[url]
  if ready == nil then
    return "200"
  end
  local q = suffix
  if again and q ~= "" then
    q = q .. "&again=1" -- only asking why the upgrade was refused: the gateway counted that refusal
  end
  local reply = api:execute("curl", ready .. q .. " json connect-timeout 1 timeout 1")
  return string.match(reply or "", '"status_code":"(%d+)"')
end
-- Set when a gateway refused because of the tenant's cap: the dialplan then refuses the call with
-- "503 Tenant At Capacity", which the edge does not count as a failed worker.
local tenant_capped = false

local candidates, seen = {}, {}
split(freeswitch.getGlobalVariable("ai_gateways_ready"), candidates, seen)
split(freeswitch.getGlobalVariable("gateway_stream_urls"), candidates, seen)
split(freeswitch.getGlobalVariable("gateway_stream_url"), candidates, seen) -- the single-gateway name of old


-- mod_audio_stream gives up on a connect after 2 s; a little more covers a busy host.
local wait_ms = tonumber(freeswitch.getGlobalVariable("gateway_connect_timeout_ms") or "") or 3000

local why = "no gateway configured (gateway_stream_urls)"
for _, url in ipairs(candidates) do
  local status = probe(url)
  if status == "429" then
    tenant_capped = true
  end
  if status ~= "200" then
    why = url .. ": not ready (" .. ready_url[url] .. " " .. (status or "no answer") .. ")"
    freeswitch.consoleLog("WARNING", "ai_stream_start.lua: " .. uuid .. " skipping gateway, " .. why .. "\n")
    goto next_gateway
  end
  local events = freeswitch.EventConsumer()
  events:bind("CUSTOM", "mod_audio_stream::connect")
  events:bind("CUSTOM", "mod_audio_stream::error")
  events:bind("CUSTOM", "mod_audio_stream::disconnect")
  local started = api:execute("uuid_audio_stream", uuid .. " start " .. url .. "/" .. uuid .. suffix .. " " .. mix .. " " .. rate ..
    " " .. metadata)
  if string.sub(started or "", 1, 3) ~= "+OK" then
    why = url .. ": " .. (started or "no reply")
  else
    -- Wait in 50 ms slices (Lua's clock has whole seconds only); events of other channels end a slice
    -- early, so they are bounded separately.
    local verdict, idle, seen_events = nil, 0, 0
    while verdict == nil and idle < wait_ms / 50 and seen_events < 10000 do
      local event = events:pop(1, 50)
      if event == nil then
        idle = idle + 1
      else
        seen_events = seen_events + 1
        if event:getHeader("Unique-ID") == uuid then
          verdict = event:getHeader("Event-Subclass")
        end
      end
    end
    if verdict == "mod_audio_stream::connect" then
      setvar("ai_stream_result", "+OK " .. url)
      setvar("ai_stream_url", url)
      setvar("ai_stream_state", "connected")
      return
    end
    why = url .. ": " .. (verdict or "no connect within " .. wait_ms .. " ms")
    -- error removes the module's bug by itself; a timeout or a refused upgrade may leave it attached
    api:execute("uuid_audio_stream", uuid .. " stop")
    -- The error event does not say why the upgrade was refused: the tenant's cap (taken between the
    -- probe and the upgrade) is asked again.
    if probe(url, true) == "429" then
      tenant_capped = true
    end
  end
  freeswitch.consoleLog("WARNING", "ai_stream_start.lua: " .. uuid .. " gateway failed, " .. why .. "\n")
  ::next_gateway::
end
setvar("ai_stream_result", "-ERR " .. why)
setvar("ai_stream_state", "none")
if tenant_capped then
  setvar("ai_stream_refusal", "tenant_cap")
end
