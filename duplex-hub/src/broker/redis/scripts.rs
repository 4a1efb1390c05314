//! The Lua scripts: each runs atomically in Redis, so offsets, history and delivery order
//! agree whichever node publishes. Time is Redis's (`TIME`), never a node's clock.
//!
//! Keys of a channel `ch` (with the prefix `duplex:`), all in one hash slot for Redis
//! Cluster thanks to the `{ch}` hash tag:
//! * `duplex:{ch}:m`: HASH `epoch`, `top` (the latest offset);
//! * `duplex:{ch}:s`: STREAM of publications, entry id `<offset>-0`, fields `x` (expiry,
//!   ms since the Unix epoch) and `d` (the body, see `envelope`);
//! * `duplex:{ch}:pr`: HASH client id → client info JSON (presence);
//! * `duplex:{ch}:pe`: ZSET client id → expiry in ms (presence heartbeats).

use ::redis::Script;
use std::sync::LazyLock;

/// Helpers shared by the stream scripts.
const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The stream's epoch and latest offset, starting a new epoch (and dropping any stream left
-- from an older one) when the stream is unknown.
local function open(meta, stream, new_epoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch, tonumber(redis.call('HGET', meta, 'top') or '0')
  end
  redis.call('HSET', meta, 'epoch', new_epoch, 'top', 0)
  redis.call('DEL', stream)
  return new_epoch, 0
end

-- Drops the expired publications at the front of the stream (like the memory broker, only
-- from the front: entries expire in the order they were added).
local function expire_front(stream, now)
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', stream, from, '+', 'COUNT', 64)
    if #batch == 0 then
      redis.call('XTRIM', stream, 'MAXLEN', 0)
      return
    end
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][2]) > now then
        redis.call('XTRIM', stream, 'MINID', entry[1])
        return
      end
    end
    from = '(' .. batch[#batch][1]
  end
end

local function keep(key, ttl)
  redis.call('PEXPIRE', key, ttl)
end
";

/// KEYS: meta, stream. ARGV: body, history size, history TTL (ms), a new epoch, the Pub/Sub
/// channel, `1` for SPUBLISH. Returns `{offset, epoch}`.
const PUBLISH: &str = r"
local now = now_ms()
local ttl = tonumber(ARGV[3])
local epoch = open(KEYS[1], KEYS[2], ARGV[4])
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
expire_front(KEYS[2], now)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], top .. '-0', 'x', now + ttl, 'd', ARGV[1])
keep(KEYS[1], ttl)
keep(KEYS[2], ttl)
local command = 'PUBLISH'
if ARGV[6] == '1' then command = 'SPUBLISH' end
redis.call(command, ARGV[5], 'P' .. top .. ':' .. epoch .. ':' .. ARGV[1])
return {top, epoch}
";

/// KEYS: meta, stream. ARGV: history size, history TTL (ms), `since` offset (empty: the
/// latest), limit (empty: none). Returns `{epoch, top, first kept offset, entries}`, entries
/// oldest first (newest first without `since` but with a limit). Reading never creates a
/// stream: without one the epoch is empty.
const HISTORY: &str = r"
local now = now_ms()
local ttl = tonumber(ARGV[2])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, 1, {}}
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
keep(KEYS[1], ttl)
keep(KEYS[2], ttl)
expire_front(KEYS[2], now)
redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[1])
local first = top + 1
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
local entries = {}
if ARGV[4] == '0' then
  entries = {}
elseif ARGV[3] ~= '' then
  local from = ARGV[3] .. '-1'
  if ARGV[4] ~= '' then
    entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', ARGV[4])
  else
    entries = redis.call('XRANGE', KEYS[2], from, '+')
  end
elseif ARGV[4] ~= '' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
else
  entries = redis.call('XRANGE', KEYS[2], '-', '+')
end
return {epoch, top, first, entries}
";

/// KEYS: presence hash, presence zset. ARGV: client, info JSON, TTL (ms). The keys live
/// twice the TTL, so that an expired entry is still there for a sweep to announce its leave.
const PRESENCE_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < 2 * ttl then
    redis.call('PEXPIRE', key, 2 * ttl)
  end
end
return 1
";

/// Drops the expired presence entries (clients of a node that stopped its heartbeats: it
/// crashed) and publishes a leave for each (`L<info JSON>`, see `envelope`), in the same
/// step: whichever node removes an entry announces it, so each leave is published once.
/// Returns how many expired.
const EXPIRE_PRESENCE: &str = r"
local function expire_presence(hash, zset, pubsub, sharded)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #gone == 0 then
    return 0
  end
  local command = 'PUBLISH'
  if sharded == '1' then command = 'SPUBLISH' end
  for _, client in ipairs(gone) do
    local info = redis.call('HGET', hash, client)
    if info then
      redis.call('HDEL', hash, client)
      redis.call(command, pubsub, 'L' .. info)
    end
  end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  return #gone
end
";

/// KEYS: presence hash, presence zset. ARGV: the Pub/Sub channel, `1` for SPUBLISH. Expires
/// entries (announcing their leave) and returns how many.
const PRESENCE_SWEEP: &str = r"
return expire_presence(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
";

/// KEYS: presence hash, presence zset. ARGV: the Pub/Sub channel, `1` for SPUBLISH. Expires
/// entries (announcing their leave) and returns the others as a flat list client, info
/// JSON, ...
const PRESENCE_GET: &str = r"
expire_presence(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
";

/// The scripts, loaded once per process (`Script` keeps the SHA1 and falls back from
/// EVALSHA to EVAL when Redis lost its script cache, after a restart).
pub(crate) struct Scripts {
    pub publish: Script,
    pub history: Script,
    pub presence_add: Script,
    pub presence_get: Script,
    pub presence_sweep: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    publish: Script::new(&format!("{COMMON}{PUBLISH}")),
    history: Script::new(&format!("{COMMON}{HISTORY}")),
    presence_add: Script::new(PRESENCE_ADD),
    presence_get: Script::new(&format!("{EXPIRE_PRESENCE}{PRESENCE_GET}")),
    presence_sweep: Script::new(&format!("{EXPIRE_PRESENCE}{PRESENCE_SWEEP}")),
});
