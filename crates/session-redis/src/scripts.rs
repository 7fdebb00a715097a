//! The Lua scripts that make each multi-step operation atomic and one round trip.
//!
//! Every script reads the record's 30-byte header (see `format.rs`) with `GETRANGE`, so a
//! save, touch or move never copies the session data into Lua just to look at its version or
//! owner. Keys the scripts derive themselves (the owner index of a stored owner) share the
//! store's prefix, which in cluster mode is the hash tag, so they live in the declared keys' slot.

use deadpool_redis::redis::Script;

/// Helpers prepended to every script.
///
/// - `owner_of(key, header)`: the owner stored in a record, or nil.
/// - `expires_of(header)`: the deadline in the header, as a Lua number (exact below 2^53 ms).
/// - `index_expire(zset)`: lets an owner index expire with its longest-lived member, so an
///   index nobody reads again still goes away.
/// - `index_add(zset, score, member)`: adds a member to an owner index, then `index_expire`.
const PRELUDE: &str = r"
local function be32(s, i)
  return ((string.byte(s, i) * 256 + string.byte(s, i + 1)) * 256 + string.byte(s, i + 2)) * 256 + string.byte(s, i + 3)
end
local function owner_of(key, h)
  if string.byte(h, 26) ~= 1 then return nil end
  local n = be32(h, 27)
  if n == 0 then return '' end
  return redis.call('GETRANGE', key, 30, 29 + n)
end
local function expires_of(h)
  local n = 0
  for i = 18, 25 do n = n * 256 + string.byte(h, i) end
  return n
end
local function index_expire(z)
  local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', z, top[2]) end
end
local function index_add(z, score, member)
  redis.call('ZADD', z, score, member)
  index_expire(z)
end
local function header(key)
  local h = redis.call('GETRANGE', key, 0, 29)
  if h == '' then return nil end
  if string.len(h) < 30 or string.byte(h, 1) ~= 1 then
    return redis.error_reply('ERR session-redis: value under ' .. key .. ' is not a session record')
  end
  return h
end
";

/// `create` of an owned record: `SET NX` plus the owner index.
///
/// KEYS: record, owner index. ARGV: value, PXAT, score, member. Returns 1 when created, 0 when
/// a live record holds the key.
const CREATE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 0 end
index_add(KEYS[2], ARGV[3], ARGV[4])
return 1
";

/// The start of the scripts a request runs (`save`, `touch`): the record's header in `h`, or
/// the script's answer when there is none (0) or it is not a record (an error). The same checks
/// as the prelude's `header`, inline: the prelude's helpers are closures the script makes anew on
/// every call (1.3 of a save's 13 µs of server time, BENCHMARKS.md), needed only with an owner.
const HOT_HEADER: &str = r"
local h = redis.call('GETRANGE', KEYS[1], 0, 29)
if h == '' then return 0 end
if string.len(h) < 30 or string.byte(h, 1) ~= 1 then
  return redis.error_reply('ERR session-redis: value under ' .. KEYS[1] .. ' is not a session record')
end
";

/// Conditional `save`, before the prelude: a record that had no owner and gets none is written
/// here, without making the prelude's helpers. The value keeps the stored `created_at`: it is
/// spliced in only when the caller's differs, since cutting and joining the value in Lua costs
/// about as much as one of the script's two commands.
///
/// KEYS: record, new owner's index (only when the new record has an owner). ARGV: expected
/// version (8 bytes), new value (its `created_at` is replaced by the stored one), PXAT, score,
/// prefix, member. Returns 1 saved, 0 no live record, -1 other version stored.
const SAVE: &str = r"
if string.sub(h, 2, 9) ~= ARGV[1] then return -1 end
local v = ARGV[2]
local created = string.sub(h, 10, 17)
if string.sub(v, 10, 17) ~= created then v = string.sub(v, 1, 9) .. created .. string.sub(v, 18) end
local has_owner = string.byte(v, 26) == 1
if string.byte(h, 26) ~= 1 and not has_owner then
  redis.call('SET', KEYS[1], v, 'PXAT', ARGV[3])
  return 1
end
";

/// The rest of `save`, after the prelude: the owner indexes.
const SAVE_OWNED: &str = r"
local old_owner = owner_of(KEYS[1], h)
redis.call('SET', KEYS[1], v, 'PXAT', ARGV[3])
if old_owner and (not has_owner or old_owner ~= string.sub(v, 31, 30 + be32(v, 27))) then
  redis.call('ZREM', ARGV[5] .. 'owner:' .. old_owner, ARGV[6])
end
if has_owner then index_add(KEYS[2], ARGV[4], ARGV[6]) end
return 1
";

/// `touch`, before the prelude: a new deadline in the header and on the key; done here for a
/// record without an owner.
///
/// KEYS: record. ARGV: PXAT, score, deadline (8 bytes), prefix, member. Returns 1 or 0 (no
/// live record).
const TOUCH: &str = r"
redis.call('SETRANGE', KEYS[1], 17, ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if string.byte(h, 26) ~= 1 then return 1 end
";

/// The rest of `touch`, after the prelude: the new deadline in the owner index.
const TOUCH_OWNED: &str = r"
local o = owner_of(KEYS[1], h)
if o then index_add(ARGV[4] .. 'owner:' .. o, ARGV[2], ARGV[5]) end
return 1
";

/// `rotate`: `RENAME` (which keeps the key's expiry) guarded by both existence checks.
///
/// KEYS: old record, new record. ARGV: prefix, old member, new member. Returns 1 moved, 0 old
/// not live, -1 new taken.
const ROTATE: &str = r"
local h = header(KEYS[1])
if not h then return 0 end
if type(h) == 'table' then return h end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('RENAME', KEYS[1], KEYS[2])
local o = owner_of(KEYS[2], h)
if o then
  local z = ARGV[1] .. 'owner:' .. o
  redis.call('ZREM', z, ARGV[2])
  index_add(z, string.format('%.0f', expires_of(h)), ARGV[3])
end
return 1
";

/// One batch of `list_by_owner`: a `ZSCAN` step over the owner index, returning the owner's
/// live records among the members it visited and dropping members whose record is gone
/// (deleted, expired) or now belongs to someone else. The last step (cursor 0) resets the
/// index's expiry to its last live member.
///
/// Batched because one script blocks every other client of the server for as long as it runs:
/// each call does at most about `count` members' work, whatever the owner's total. `ZSCAN`
/// rather than ranks, because it returns every member present for the whole walk even while
/// other calls remove members (a rank would shift under them and skip live sessions); it may
/// return a member twice, which the caller removes.
///
/// KEYS: owner index. ARGV: prefix, owner, cursor, count. Returns
/// `[next cursor, member, value, member, value, ...]`.
const LIST_BY_OWNER: &str = r"
local step = redis.call('ZSCAN', KEYS[1], ARGV[3], 'COUNT', ARGV[4])
local out = {step[1]}
local items = step[2]
for i = 1, #items, 2 do
  local m = items[i]
  local k = ARGV[1] .. m
  local h = header(k)
  if type(h) == 'table' then return h end
  if h and owner_of(k, h) == ARGV[2] then
    out[#out + 1] = m
    out[#out + 1] = redis.call('GET', k)
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
if step[1] == '0' then index_expire(KEYS[1]) end
return out
";

/// One batch of `delete_by_owner`: takes the first `count` members off the owner index and
/// deletes those of their records the owner still holds. The caller repeats until the index is
/// empty, so sessions moved into the index meanwhile (`rotate`, a save) are deleted too.
/// Batched for the reason given on `LIST_BY_OWNER`.
///
/// KEYS: owner index. ARGV: prefix, owner, count. Returns `[deleted, members left]`.
const DELETE_BY_OWNER: &str = r"
local n = tonumber(ARGV[3])
local deleted = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - 1)) do
  local k = ARGV[1] .. m
  local h = header(k)
  if type(h) == 'table' then return h end
  if h and owner_of(k, h) == ARGV[2] then
    redis.call('DEL', k)
    deleted = deleted + 1
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
return {deleted, redis.call('ZCARD', KEYS[1])}
";

/// The compiled scripts (their SHA1s are computed once, here).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) create: Script,
    pub(crate) save: Script,
    pub(crate) touch: Script,
    pub(crate) rotate: Script,
    pub(crate) list_by_owner: Script,
    pub(crate) delete_by_owner: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        // Lua allows `local function` after the early `return`s: the helpers are made only on
        // the path that reaches them.
        let hot =
            |head: &str, owned: &str| Script::new(&format!("{HOT_HEADER}{head}{PRELUDE}{owned}"));
        Self {
            create: script(CREATE),
            save: hot(SAVE, SAVE_OWNED),
            touch: hot(TOUCH, TOUCH_OWNED),
            rotate: script(ROTATE),
            list_by_owner: script(LIST_BY_OWNER),
            delete_by_owner: script(DELETE_BY_OWNER),
        }
    }
}
