-- A call's stream went away (CUSTOM mod_audio_stream::disconnect, or ::error after it was connected,
-- e.g. a missed heart-beat: lua.conf.xml event hooks).
--
-- Normally the gateway acts itself (hangs up, transfers); this covers a gateway that died, was
-- restarted or drained with the call still parked, so nobody is ever left parked without a stream.
-- The hook only marks the channel and schedules a check ai_stream_lost_grace seconds later (event
-- hooks must not block); the check (same script, with the uuid as argument) finds the call still
-- parked without a stream and reconnects it to a ready gateway (a fresh agent session), or, with none
-- ready, hangs it up with NORMAL_TEMPORARY_FAILURE.

local api = freeswitch.API()

local function uuid_var(uuid, name)
  local value = api:execute("uuid_getvar", uuid .. " " .. name)
  if value == nil or value == "_undef_" or string.sub(value, 1, 4) == "-ERR" then
    return nil
  end
  return value
end

if event ~= nil then
  local uuid = event:getHeader("Unique-ID")
  if uuid == nil or event:getHeader("variable_ai_stream_state") ~= "connected" then
    return -- not a call of ours, or a failed connect that ai_stream_start.lua handles itself
  end
  api:execute("uuid_setvar", uuid .. " ai_stream_state lost")
  local grace = freeswitch.getGlobalVariable("ai_stream_lost_grace")
  if grace == nil or grace == "" then
    grace = "2"
  end
  api:execute("sched_api", "+" .. grace .. " none lua " .. freeswitch.getGlobalVariable("conf_dir") ..
    "/scripts/ai_stream_lost.lua " .. uuid .. " &")
  return
end

local uuid = argv and argv[1]
if uuid == nil or api:execute("uuid_exists", uuid) ~= "true" then
  return
end
-- Still the AI's call? Reconnected meanwhile, or moved on by the gateway (the ai-transfer extensions
-- stop the stream and set ai_stream_stop; bridge and conference are the human legs): leave it alone.
-- (While parked, current_application is park, or playback after the gateway's uuid_broadcast.)
local app = uuid_var(uuid, "current_application") or ""
if uuid_var(uuid, "ai_stream_state") ~= "lost" or uuid_var(uuid, "ai_stream_stop") ~= nil or
    app == "bridge" or app == "conference" then
  return
end
freeswitch.consoleLog("WARNING", "ai_stream_lost.lua: " .. uuid .. " parked without a stream, reconnecting\n")
-- Same interpreter, no session: ai_stream_start.lua then works on argv[1] through the API.
argv = { uuid }
dofile(freeswitch.getGlobalVariable("conf_dir") .. "/scripts/ai_stream_start.lua")
local result = uuid_var(uuid, "ai_stream_result") or ""
if string.sub(result, 1, 3) ~= "+OK" then
  freeswitch.consoleLog("ERR", "ai_stream_lost.lua: " .. uuid .. " no gateway (" .. result .. "), hanging up\n")
  api:execute("uuid_kill", uuid .. " NORMAL_TEMPORARY_FAILURE")
end
