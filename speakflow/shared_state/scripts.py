"""The Redis store's Lua scripts: each lifecycle step is one atomic server-side call.

Why Lua rather than MULTI/WATCH: admission must read every counted record (is
its owner alive? has its window passed?) and then write; with WATCH, 20
concurrent starts retry each other into the ground, a script runs them one
after another in a few hundred microseconds each. Keys are built inside the
scripts from a prefix, so this targets one Redis/Valkey server (or a
primary with replicas), not Redis Cluster.

Layout (prefix ``P``, default ``speakflow:``):
  P s:<sid>   hash  user owner epoch attached(1/0) since(ms) rec seq handoff hfrom
                    w:<source> (the written mark: end_ms of the newest final written)
  P u:<user>  set   the user's session ids
  P all       set   every session id (scanned only when a total limit is set)
  P i:<inst>  str   present while the instance's heartbeat is current (PX ttl)
  P x:<inst>  list  takeover notices "<sid> <epoch>" for that instance
  P j:<sid>   list  journal entries "<seq>\n<source>\n<end_ms>\n<payload>"
"""

from __future__ import annotations

# Shared helpers, prepended to the scripts that need them.
_COMMON = r"""
local P = ARGV[1]
local function alive(inst) return redis.call('EXISTS', P .. 'i:' .. inst) == 1 end
local function forget(sid)
  local key = P .. 's:' .. sid
  local user = redis.call('HGET', key, 'user')
  redis.call('DEL', key, P .. 'j:' .. sid)
  redis.call('SREM', P .. 'all', sid)
  if user then redis.call('SREM', P .. 'u:' .. user, sid) end
end
-- nil while attached to a live owner; else the ms since which it counts as detached
-- (an attached record whose owner died is detached from the moment that is seen)
local function detached_since(key, now)
  local h = redis.call('HMGET', key, 'owner', 'attached', 'since')
  if h[2] == '1' then
    if alive(h[1]) then return nil end
    redis.call('HSET', key, 'attached', '0', 'since', now)
    return now
  end
  return tonumber(h[3])
end
"""

#: ARGV: P sid user inst now_ms per_user total window_ms ttl_ms rec
#: -> {status, epoch, rec, previous_owner, handoff(0/1), count, evicted...}
OPEN = (
    _COMMON
    + r"""
local sid, user, inst = ARGV[2], ARGV[3], ARGV[4]
local now, per_user, total = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window, ttl, rec = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local key = P .. 's:' .. sid

-- count the live records among a set's ids; collect the detached ones
local function scan(setkey)
  local count, detached = 0, {}
  for _, s in ipairs(redis.call('SMEMBERS', setkey)) do
    local k = P .. 's:' .. s
    if redis.call('EXISTS', k) == 0 then
      redis.call('SREM', setkey, s)
    else
      local since = detached_since(k, now)
      if since ~= nil and since + window <= now then
        forget(s)
      else
        count = count + 1
        if since ~= nil then table.insert(detached, {since, s}) end
      end
    end
  end
  table.sort(detached, function(a, b) return a[1] < b[1] end)
  return count, detached
end

local evicted = {}
local function make_room(setkey, limit)
  local count, detached = scan(setkey)
  local i = 1
  while count >= limit and detached[i] do
    forget(detached[i][2])
    table.insert(evicted, detached[i][2])
    count = count - 1
    i = i + 1
  end
  return count
end

local function reply(status, epoch, r, prev, handoff, count)
  local out = {status, epoch, r, prev, handoff, count}
  for _, s in ipairs(evicted) do table.insert(out, s) end
  return out
end

local h = redis.call('HMGET', key, 'user', 'owner', 'epoch', 'rec', 'attached')
if h[1] then
  if h[1] ~= user then return reply('user_mismatch', 0, '', '', 0, 0) end
  local since = detached_since(key, now)
  if since ~= nil and since + window <= now then
    forget(sid)
  else
    local epoch = tonumber(h[3]) + 1
    local prev = ''
    if since == nil then prev = h[2] end
    local pending = 0
    if prev ~= '' and prev ~= inst then
      pending = 1
      redis.call('RPUSH', P .. 'x:' .. prev, sid .. ' ' .. (epoch - 1))
      redis.call('PEXPIRE', P .. 'x:' .. prev, 60000)
      redis.call('HSET', key, 'handoff', epoch - 1, 'hfrom', prev)
    else
      redis.call('HSET', key, 'handoff', 0, 'hfrom', '')
    end
    redis.call('HSET', key, 'owner', inst, 'epoch', epoch, 'attached', '1', 'since', now)
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', P .. 'j:' .. sid, ttl)
    return reply('resumed', epoch, h[4], prev, pending, 0)
  end
end
if per_user > 0 then
  local count = make_room(P .. 'u:' .. user, per_user)
  if count >= per_user then return reply('user_limit', 0, '', '', 0, count) end
end
if total > 0 then
  local count = make_room(P .. 'all', total)
  if count >= total then return reply('total_limit', 0, '', '', 0, count) end
end
redis.call('HSET', key, 'user', user, 'owner', inst, 'epoch', 1, 'attached', '1',
           'since', now, 'rec', rec, 'seq', 0, 'handoff', 0, 'hfrom', '')
redis.call('PEXPIRE', key, ttl)
redis.call('SADD', P .. 'u:' .. user, sid)
redis.call('SADD', P .. 'all', sid)
return reply('new', 1, rec, '', 0, 0)
"""
)

# Owner writes: ARGV P sid epoch ...; -> 'stale' when the epoch is not current.
_OWNED = r"""
local P, sid, epoch = ARGV[1], ARGV[2], ARGV[3]
local key = P .. 's:' .. sid
if redis.call('HGET', key, 'epoch') ~= epoch then return 'stale' end
"""

#: ARGV: P sid epoch rec
SAVE = _OWNED + "redis.call('HSET', key, 'rec', ARGV[4])\nreturn 'ok'\n"

#: ARGV: P sid epoch rec now_ms window_ms
DETACH = (
    _OWNED
    + r"""
redis.call('HSET', key, 'rec', ARGV[4], 'attached', '0', 'since', ARGV[5])
local ttl = tonumber(ARGV[6]) + 60000
redis.call('PEXPIRE', key, ttl)
redis.call('PEXPIRE', P .. 'j:' .. sid, ttl)
return 'ok'
"""
)

#: ARGV: P sid epoch
END = (
    _OWNED
    + r"""
local user = redis.call('HGET', key, 'user')
redis.call('DEL', key, P .. 'j:' .. sid)
redis.call('SREM', P .. 'all', sid)
redis.call('SREM', P .. 'u:' .. user, sid)
return 'ok'
"""
)

#: ARGV: P sid old_epoch rec
HANDOFF = r"""
local P, sid = ARGV[1], ARGV[2]
local key = P .. 's:' .. sid
local h = redis.call('HGET', key, 'handoff')
if not h or h == '0' or h ~= ARGV[3] then return 'stale' end
redis.call('HSET', key, 'rec', ARGV[4], 'handoff', 0, 'hfrom', '')
return 'ok'
"""

#: ARGV: P sid epoch finish(0/1) -> {'stale'} | {'wait'} | {'ok', rec}
HANDOFF_STATE = r"""
local P, sid, epoch, finish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = P .. 's:' .. sid
local h = redis.call('HMGET', key, 'epoch', 'handoff', 'hfrom', 'rec')
if h[1] ~= epoch then return {'stale'} end
if h[2] ~= '0' and redis.call('EXISTS', P .. 'i:' .. h[3]) == 1 and finish == '0' then
  return {'wait'}
end
redis.call('HSET', key, 'handoff', 0, 'hfrom', '')
return {'ok', h[4]}
"""

_MARK = r"""
local function mark(src) return tonumber(redis.call('HGET', key, 'w:' .. src) or '-1') end
"""

_TRIM = (
    _MARK
    + r"""
-- from the head, up to seq upto, stopping at an entry above its source's mark
local function trim(upto)
  while true do
    local head = redis.call('LINDEX', jkey, 0)
    if not head then return end
    local seq, src, e = string.match(head, '^(%d+)\n([^\n]*)\n(%d+)\n')
    if tonumber(seq) > upto or tonumber(e) > mark(src) then return end
    redis.call('LPOP', jkey)
  end
end
"""
)

# The owner's writes, or the previous owner's until its handoff is done.
_WRITABLE = r"""
local P, sid, epoch = ARGV[1], ARGV[2], ARGV[3]
local key, jkey = P .. 's:' .. sid, P .. 'j:' .. sid
local h = redis.call('HMGET', key, 'epoch', 'handoff')
if not h[1] then return 'stale' end
local current = h[1] == epoch
if not current and (h[2] == '0' or h[2] ~= epoch) then return 'stale' end
"""

#: ARGV: P sid epoch source end_ms payload delivered written(0/1) checkpoint
#: -> seq | 'stale'
APPEND = (
    _WRITABLE
    + _TRIM
    + r"""
local src, e = ARGV[4], tonumber(ARGV[5])
if current and ARGV[9] ~= '' then redis.call('HSET', key, 'rec', ARGV[9]) end
if ARGV[8] == '1' and e > mark(src) then redis.call('HSET', key, 'w:' .. src, e) end
local delivered = tonumber(ARGV[7])
if current and delivered > 0 then trim(delivered) end
-- a repeat is among the newest entries: per source, end_ms only grows
for i = redis.call('LLEN', jkey) - 1, 0, -1 do
  local item = redis.call('LINDEX', jkey, i)
  local seq, s, old = string.match(item, '^(%d+)\n([^\n]*)\n(%d+)\n')
  if s == src then
    if tonumber(old) == e then return tonumber(seq) end
    if tonumber(old) < e then break end
  end
end
local seq = redis.call('HINCRBY', key, 'seq', 1)
redis.call('RPUSH', jkey, seq .. '\n' .. src .. '\n' .. ARGV[5] .. '\n' .. ARGV[6])
local ttl = redis.call('PTTL', key)
if ttl > 0 then redis.call('PEXPIRE', jkey, ttl) end
return seq
"""
)

#: ARGV: P sid epoch [source first_unsent_ms]... -> 'ok' | 'stale'
UNSENT = (
    _WRITABLE
    + _MARK
    + r"""
for i = 4, #ARGV, 2 do
  local below = tonumber(ARGV[i + 1]) - 1
  if below < mark(ARGV[i]) then redis.call('HSET', key, 'w:' .. ARGV[i], below) end
end
return 'ok'
"""
)

#: ARGV: P sid epoch said(0/1) [source have_ms]... -> entries | 'stale'
TAKE = (
    _OWNED
    + _MARK
    + r"""
local said, have = ARGV[4] == '1', {}
for i = 5, #ARGV, 2 do have[ARGV[i]] = tonumber(ARGV[i + 1]) end
local out, top = {}, {}
for _, item in ipairs(redis.call('LRANGE', P .. 'j:' .. sid, 0, -1)) do
  local src, e = string.match(item, '^%d+\n([^\n]*)\n(%d+)\n')
  e = tonumber(e)
  local after
  if said then after = have[src] or -1 else after = mark(src) end
  if e > after then
    table.insert(out, item)
    top[src] = e
  end
end
for src, e in pairs(have) do
  if top[src] == nil or top[src] < e then top[src] = e end
end
for src, e in pairs(top) do
  if e > mark(src) then redis.call('HSET', key, 'w:' .. src, e) end
end
return out
"""
)

#: ARGV: P sid epoch upto
TRIM = _OWNED + "local jkey = P .. 'j:' .. sid\n" + _TRIM + "trim(tonumber(ARGV[4]))\nreturn 'ok'\n"

#: ARGV: P inst ttl_ms -> notices
HEARTBEAT = r"""
local P, inst = ARGV[1], ARGV[2]
redis.call('SET', P .. 'i:' .. inst, '1', 'PX', ARGV[3])
local inbox = P .. 'x:' .. inst
local notices = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
return notices
"""
