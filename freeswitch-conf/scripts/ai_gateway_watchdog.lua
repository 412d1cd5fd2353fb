-- Gateway watchdog of an AI worker (runs every gateway_probe_interval seconds, rescheduling itself).
--
-- Probes each gateway's readiness URL (gateway_ready_urls, same order as gateway_stream_urls) with
-- mod_curl and publishes the stream URLs of the ready ones, in order, as the global variable
-- ai_gateways_ready (what ai_stream_start.lua tries first). When none is ready it pauses inbound calls
-- (`fsctl pause inbound`): FreeSWITCH then refuses new INVITEs with 503 and, with the profile's
-- sip-options-respond-503-on-busy, answers the edge's OPTIONS probes 503, so Kamailio's dispatcher
-- stops sending calls here within one probe. It resumes inbound as soon as one gateway is ready again,
-- and only if it was the watchdog that paused (an operator's drain pause is left alone).

local api = freeswitch.API()

local function split(text)
  local out = {}
  for item in string.gmatch(text or "", "[^,%s]+") do
    out[#out + 1] = item
  end
  return out
end

local function global(name)
  local value = freeswitch.getGlobalVariable(name)
  if value == nil or value == "" then
    return nil
  end
  return value
end

local streams = split(global("gateway_stream_urls") or global("gateway_stream_url"))
local probes = split(global("gateway_ready_urls"))
local interval = tonumber(global("gateway_probe_interval") or "1") or 1
local timeout = tonumber(global("gateway_probe_timeout") or "1") or 1

local ready = {}
for i, stream in ipairs(streams) do
  local probe = probes[i]
  if probe == nil then
    -- no readiness URL for this gateway: count it as ready (the per-call connect check still applies)
    ready[#ready + 1] = stream
  else
    local reply = api:execute("curl", probe .. " json connect-timeout " .. timeout .. " timeout " .. timeout)
    local status = string.match(reply or "", '"status_code":"(%d+)"')
    if status == "200" then
      ready[#ready + 1] = stream
    end
  end
end

local list = table.concat(ready, ",")
local before = global("ai_gateways_ready") or ""
api:execute("global_setvar", "ai_gateways_ready=" .. list)
if list ~= before then
  freeswitch.consoleLog(#ready > 0 and "NOTICE" or "WARNING",
    "ai-gateway-watchdog: ready gateways [" .. list .. "] (was [" .. before .. "])\n")
end

local paused_by_us = global("ai_gateway_watchdog_paused") == "true"
if #streams > 0 and #ready == 0 and not paused_by_us then
  api:execute("fsctl", "pause inbound")
  api:execute("global_setvar", "ai_gateway_watchdog_paused=true")
  freeswitch.consoleLog("WARNING", "ai-gateway-watchdog: no gateway ready, inbound calls paused (OPTIONS 503)\n")
elseif #ready > 0 and paused_by_us then
  api:execute("fsctl", "resume inbound")
  api:execute("global_setvar", "ai_gateway_watchdog_paused=false")
  freeswitch.consoleLog("NOTICE", "ai-gateway-watchdog: a gateway is ready, inbound calls resumed\n")
end

-- Next round; the scheduler group lets an operator stop it with `sched_del ai_gateway_watchdog`.
api:execute("sched_api", "+" .. interval .. " ai_gateway_watchdog lua " .. global("conf_dir") ..
  "/scripts/ai_gateway_watchdog.lua &")
