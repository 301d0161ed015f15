//! The Lua scripts: every write of presence runs in Redis as one script, so
//! each reads and changes a user's keys atomically, on Redis's clock.

// Shared by the scripts. TIME makes Redis the only clock; numbers are
// formatted with %d because Lua would print large ones in exponent notation.
pub(super) const PRELUDE: &str = r#"
local function s(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function last_seen(ls_key)
  local v = redis.call('GET', ls_key)
  if v then return tonumber(v) end
  return -1
end
local function raise_last_seen(ls_key, t)
  local cur = last_seen(ls_key)
  if t > cur then redis.call('SET', ls_key, s(t)) return t end
  return cur
end
-- Drops expired members (only earlier versions' entries expire), folding
-- the latest expiry into last_seen so the trim loses nothing; returns that
-- expiry, or 0 when nothing had expired.
local function trim(key, ls_key, now)
  local old = redis.call('ZREVRANGEBYSCORE', key, s(now), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #old == 0 then return 0 end
  local latest = tonumber(old[2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', s(now))
  raise_last_seen(ls_key, latest)
  return latest
end
local function live(key, now)
  return redis.call('ZCOUNT', key, '(' .. s(now), '+inf')
end
-- Removes the members starting with `head` and, when given, ending with
-- `tail`, except `keep`; returns how many.
local function remove(key, head, tail, keep)
  local n = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if m ~= keep and string.sub(m, 1, #head) == head
        and (tail == '' or string.sub(m, -#tail) == tail) then
      redis.call('ZREM', key, m)
      n = n + 1
    end
  end
  return n
end
local function publish_offline(channel, user, seen)
  local ls = ''
  if seen >= 0 then ls = ',"last_seen":' .. s(seen) end
  redis.call('PUBLISH', channel, '{"user":' .. cjson.encode(user) .. ',"status":"offline"' .. ls .. '}')
end
"#;

// KEYS: p, ls. ARGV: member, channel, user, node head, conn tail. Adds a
// connection, dropping its entries of earlier incarnations of this node (it
// is being added again); announces the user when it had none before.
pub(super) const TOUCH: &str = r#"
local now = now_ms()
local was_live = live(KEYS[1], now)
trim(KEYS[1], KEYS[2], now)
remove(KEYS[1], ARGV[4], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[1], '+inf', ARGV[1])
if was_live == 0 then
  redis.call('PUBLISH', ARGV[2], '{"user":' .. cjson.encode(ARGV[3]) .. ',"status":"online"}')
  return 1
end
return 0
"#;

// KEYS: p, ls. ARGV: node head, conn tail, time of the disconnect, channel,
// user. Removes a connection (whichever incarnation of this node added it);
// when none is left, records last_seen and, if this call removed the last
// one, announces the user offline. The time comes from the node (capped by
// Redis's clock) because a removal may run long after the disconnect:
// replayed, or buffered across a reconnection.
pub(super) const LEAVE: &str = r#"
local now = now_ms()
local removed = remove(KEYS[1], ARGV[1], ARGV[2], '')
trim(KEYS[1], KEYS[2], now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local seen = raise_last_seen(KEYS[2], math.min(tonumber(ARGV[3]), now))
if removed > 0 then
  publish_offline(ARGV[4], ARGV[5], seen)
  return 1
end
return 0
"#;

// KEYS: p, ls. ARGV: channel, user. Returns {live, last_seen or -1}. The
// first caller to find a user's last entries expired (an earlier version's
// node died) announces it offline: nobody else would.
pub(super) const OBSERVE: &str = r#"
local now = now_ms()
local n = live(KEYS[1], now)
local latest = trim(KEYS[1], KEYS[2], now)
if n > 0 then return {1, -1} end
local seen = last_seen(KEYS[2])
if latest > 0 then publish_offline(ARGV[1], ARGV[2], seen) end
return {0, seen}
"#;

// KEYS: p, ls. ARGV: incarnation head, channel, user. Removes a dead
// incarnation's entries of one user; announces the user offline when none
// is left.
pub(super) const SWEEP: &str = r#"
local now = now_ms()
local removed = remove(KEYS[1], ARGV[1], '', '')
trim(KEYS[1], KEYS[2], now)
if removed == 0 or redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
publish_offline(ARGV[2], ARGV[3], raise_last_seen(KEYS[2], now))
return 1
"#;

// KEYS: nodes. ARGV: incarnation, ttl ms, fresh (1 for its first beat).
// Records a heartbeat; returns 1 when the previous one is less than the ttl
// old. An incarnation that is not fresh and was forgotten or went stale
// stays so (returns 0, writes nothing): it may be being swept, and a beat
// whose answer is lost must not hide that from its node.
pub(super) const BEAT: &str = r#"
local now = now_ms()
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev and now - tonumber(prev) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], s(now))
  return 1
end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], ARGV[1], s(now)) end
return 0
"#;

// KEYS: nodes. ARGV: ttl ms. The incarnations that have not beaten for ttl.
pub(super) const STALE: &str = r#"
local now = now_ms()
local dead = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if now - tonumber(all[i + 1]) > tonumber(ARGV[1]) then table.insert(dead, all[i]) end
end
return dead
"#;

// KEYS: nodes. ARGV: incarnation, ttl ms. Forgets a swept incarnation,
// unless it beat meanwhile.
pub(super) const FORGET: &str = r#"
local now = now_ms()
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev and now - tonumber(prev) > tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;
