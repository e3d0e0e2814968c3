"""The Lua scripts of the Redis store: each write is one script, so each is atomic and one round trip.

Python computes every new record (the state machine lives in scheduler/store/transitions.py);
the scripts only check and apply: the plan version, the leader epoch (fencing), and each job's
compare-and-set token "rev:state:attempts:tag" (scheduler/store/keys.py lists the keys). Scripts
take all their key names from KEYS (in the order of `*_KEYS` below) and ARGV.
"""

from __future__ import annotations

# Keys every writing script gets, in this order (see RedisStore._write_keys).
WRITE_KEYS = (
    "jobs",
    "token",
    "queue",
    "counts",
    "seq",
    "events",
    "job_events",
    "order",
    "version",
    "alloc",
    "alloc_log",
    "leader",
)

# Queue score = tier * 2^42 + queue sequence: exact in a double for tiers < 2^11 (priority +-1024).
TIER_SHIFT = 4398046511104  # 2^42
PRIORITY_LIMIT = 1024

_COMMON = """
local K_JOBS, K_TOKEN, K_QUEUE, K_COUNTS, K_SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_EVENTS, K_JOB_EVENTS, K_ORDER, K_VERSION = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_ALLOC, K_ALLOC_LOG, K_LEADER = KEYS[10], KEYS[11], KEYS[12]
local STATE_PREFIX = KEYS[13]

local function emit(id, kind, at, blob, maxlen)
  local seq = redis.call('INCR', K_SEQ)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', maxlen, seq .. '-0', 'k', kind, 'at', at, 'id', id, 'j', blob)
  local prev = redis.call('HGET', K_JOB_EVENTS, id)
  if prev then
    redis.call('HSET', K_JOB_EVENTS, id, prev .. ',' .. seq)
  else
    redis.call('HSET', K_JOB_EVENTS, id, seq)
  end
  return seq
end

local function move(id, from, to)
  if from == to then return end
  local sub = redis.call('ZSCORE', K_ORDER, id)
  redis.call('ZREM', STATE_PREFIX .. from, id)
  redis.call('ZADD', STATE_PREFIX .. to, sub, id)
  redis.call('HINCRBY', K_COUNTS, from, -1)
  redis.call('HINCRBY', K_COUNTS, to, 1)
end

local function bump(payload, keep)
  local v = redis.call('INCR', K_VERSION)
  redis.call('ZADD', K_ALLOC_LOG, v, v .. '|' .. payload)
  redis.call('ZREMRANGEBYRANK', K_ALLOC_LOG, 0, -keep - 1)
end

-- True when `epoch` may not act: it is not the live lease's epoch (0 only while no lease is held).
local function fenced(epoch)
  local cur = redis.call('GET', K_LEADER)
  if not cur then return epoch ~= 0 end
  return tonumber(string.match(cur, '^(%d+)')) ~= epoch
end
"""

# Appends audit entries (scheduler.finops) in the same script as the decision they record, from
# ARGV[at]: their count n, then job id and record of each (codec.audit_args). Returns the index
# after them.
_AUDIT = """
local function audit_append(k_audit, k_seq, k_jobs, at)
  local n = tonumber(ARGV[at] or '0')
  if n == 0 then return at + 1 end
  local last = redis.call('INCRBY', k_seq, n)
  for i = 0, n - 1 do
    local seq = last - n + 1 + i
    local id, record = ARGV[at + 1 + i * 2], ARGV[at + 2 + i * 2]
    redis.call('XADD', k_audit, seq .. '-0', 'e', record)
    if id ~= '' then
      local prev = redis.call('HGET', k_jobs, id)
      if prev then
        redis.call('HSET', k_jobs, id, prev .. ',' .. seq)
      else
        redis.call('HSET', k_jobs, id, seq)
      end
    end
  end
  return at + 1 + n * 2
end
"""

# Extra KEYS: 14 requests, 15 submitted, 16 specs.
# ARGV: maxlen, tier_shift, n, then per job: id, request_id, spec, status, tier, created_at, token
# Returns per job: created (1/0), job id, and for an existing job its status, spec and token ('' else).
SUBMIT = (
    _COMMON
    + """
local K_REQUESTS, K_SUBMITTED, K_SPECS = KEYS[14], KEYS[15], KEYS[16]
local maxlen, shift, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, n - 1 do
  local id = ARGV[4 + i * 7]
  if redis.call('HEXISTS', K_JOBS, id) == 1 then
    return redis.error_reply('duplicate job id ' .. id)
  end
end
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, rid, spec, status = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local tier, at, token = tonumber(ARGV[b + 4]), ARGV[b + 5], ARGV[b + 6]
  local existing = false
  if rid ~= '' then existing = redis.call('HGET', K_REQUESTS, rid) end
  if existing then
    out[#out + 1] = 0
    out[#out + 1] = existing
    out[#out + 1] = redis.call('HGET', K_JOBS, existing) or ''
    out[#out + 1] = redis.call('HGET', K_SPECS, existing) or ''
    out[#out + 1] = redis.call('HGET', K_TOKEN, existing) or ''
  else
    redis.call('HSET', K_SPECS, id, spec)
    redis.call('HSET', K_JOBS, id, status)
    redis.call('HSET', K_TOKEN, id, token)
    local sub = redis.call('INCR', K_SUBMITTED)
    redis.call('ZADD', K_ORDER, sub, id)
    redis.call('ZADD', STATE_PREFIX .. 'pending', sub, id)
    redis.call('HINCRBY', K_COUNTS, 'pending', 1)
    if rid ~= '' then redis.call('HSET', K_REQUESTS, rid, id) end
    local seq = emit(id, 'submitted', at, status, maxlen)
    redis.call('ZADD', K_QUEUE, tier * shift + seq, id)
    out[#out + 1] = 1
    out[#out + 1] = id
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""
)

# ARGV: base_version, epoch, maxlen, log_keep, log_payload, replica_expires_at,
#       n_place, n_reject, n_wait, n_replica, then
#       placements: id, expected, token, blob, alloc, at     (6 each)
#       rejections: id, expected, token, blob, at            (5 each)
#       waits:      id, expected, token, blob, at            (5 each)
#       replicas:   field                                    (1 each)
#       then the plan's audit entries (codec.audit_args)
# Extra KEYS: 14 replicas, 15 audit, 16 audit_seq, 17 audit_jobs.
# Returns {'ok', version after}, or 'fenced', 'stale' or 'changed' (nothing applied).
COMMIT = (
    _COMMON
    + _AUDIT
    + """
local K_REPLICAS = KEYS[14]
local base, epoch, maxlen, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local payload, expires = ARGV[5], tonumber(ARGV[6])
local np, nr, nw, nrep = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if fenced(epoch) then return 'fenced' end
if tonumber(redis.call('GET', K_VERSION) or '0') ~= base then return 'stale' end
local p0, r0 = 11, 11 + np * 6
local w0 = r0 + nr * 5
local x0 = w0 + nw * 5
for i = 0, np - 1 do
  if redis.call('HGET', K_TOKEN, ARGV[p0 + i * 6]) ~= ARGV[p0 + i * 6 + 1] then return 'changed' end
end
for i = 0, nr - 1 do
  if redis.call('HGET', K_TOKEN, ARGV[r0 + i * 5]) ~= ARGV[r0 + i * 5 + 1] then return 'changed' end
end
for i = 0, np - 1 do
  local b = p0 + i * 6
  local id = ARGV[b]
  redis.call('HSET', K_JOBS, id, ARGV[b + 3])
  redis.call('HSET', K_TOKEN, id, ARGV[b + 2])
  redis.call('ZREM', K_QUEUE, id)
  move(id, 'pending', 'placed')
  redis.call('HSET', K_ALLOC, id, ARGV[b + 4])
  emit(id, 'placed', ARGV[b + 5], ARGV[b + 3], maxlen)
end
for i = 0, nr - 1 do
  local b = r0 + i * 5
  local id = ARGV[b]
  redis.call('HSET', K_JOBS, id, ARGV[b + 3])
  redis.call('HSET', K_TOKEN, id, ARGV[b + 2])
  redis.call('ZREM', K_QUEUE, id)
  move(id, 'pending', 'rejected')
  emit(id, 'rejected', ARGV[b + 4], ARGV[b + 3], maxlen)
end
for i = 0, nw - 1 do
  local b = w0 + i * 5
  local id = ARGV[b]
  if redis.call('HGET', K_TOKEN, id) == ARGV[b + 1] then
    redis.call('HSET', K_JOBS, id, ARGV[b + 3])
    redis.call('HSET', K_TOKEN, id, ARGV[b + 2])
    emit(id, 'waiting', ARGV[b + 4], ARGV[b + 3], maxlen)
  end
end
for i = 0, nrep - 1 do
  local field = ARGV[x0 + i]
  local cur = redis.call('HGET', K_REPLICAS, field)
  if not cur or tonumber(cur) < expires then redis.call('HSET', K_REPLICAS, field, ARGV[6]) end
end
if np + nr > 0 then bump(payload, keep) end
audit_append(KEYS[15], KEYS[16], KEYS[17], x0 + nrep)
return {'ok', tonumber(redis.call('GET', K_VERSION) or '0')}
"""
)

# ARGV: maxlen, log_keep, tier_shift, n, then per update:
#   id, expected, token, blob, from_state, to_state, event_kind, at, release (0/1), tier, log_payload
#   (11), then its audit entries (codec.audit_args: a count, then 2 per entry)
# Extra KEYS: 14 audit, 15 audit_seq, 16 audit_jobs.
# Returns per update 1 (applied) or 0 (token changed: re-read and recompute).
UPDATE = (
    _COMMON
    + _AUDIT
    + """
local maxlen, keep, shift, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local b = 5
for i = 0, n - 1 do
  local id = ARGV[b]
  local after = b + 12 + tonumber(ARGV[b + 11]) * 2  -- where the next update starts
  if redis.call('HGET', K_TOKEN, id) ~= ARGV[b + 1] then
    out[#out + 1] = 0
  else
    local blob, from, to = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
    if ARGV[b + 8] == '1' then redis.call('HDEL', K_ALLOC, id) end
    if from ~= to then bump(ARGV[b + 10], keep) end
    redis.call('HSET', K_JOBS, id, blob)
    redis.call('HSET', K_TOKEN, id, ARGV[b + 2])
    move(id, from, to)
    if from == 'pending' and to ~= 'pending' then redis.call('ZREM', K_QUEUE, id) end
    local seq = emit(id, ARGV[b + 6], ARGV[b + 7], blob, maxlen)
    if to == 'pending' and from ~= 'pending' then
      redis.call('ZADD', K_QUEUE, tonumber(ARGV[b + 9]) * shift + seq, id)
    end
    audit_append(KEYS[14], KEYS[15], KEYS[16], b + 11)
    out[#out + 1] = 1
  end
  b = after
end
return out
"""
)

# KEYS: leader, token, jobs, launches, launch_log
# ARGV: epoch, now, log_keep, n, then per claim: id, attempt
# Returns per claim: verdict, epoch holding the claim, job status and token ('' when refused).
CLAIM = """
local K_LEADER, K_TOKEN, K_JOBS, K_LAUNCHES, K_LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch, now, keep, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cur = redis.call('GET', K_LEADER)
local fenced
if cur then fenced = tonumber(string.match(cur, '^(%d+)')) ~= epoch else fenced = epoch ~= 0 end
local out = {}
for i = 0, n - 1 do
  local id, attempt = ARGV[5 + i * 2], ARGV[6 + i * 2]
  if fenced then
    out[#out + 1] = 'fenced'; out[#out + 1] = 0; out[#out + 1] = ''; out[#out + 1] = ''
  else
    local token = redis.call('HGET', K_TOKEN, id)
    local state, n_attempts = nil, nil
    if token then state, n_attempts = string.match(token, '^%d+:(%a+):(%d+):') end
    if state ~= 'placed' or n_attempts ~= attempt then
      out[#out + 1] = 'not_placed'; out[#out + 1] = 0; out[#out + 1] = ''; out[#out + 1] = ''
    else
      local field = id .. '#' .. attempt
      local holder = redis.call('HGET', K_LAUNCHES, field)
      local blob = redis.call('HGET', K_JOBS, id)
      if holder and tonumber(holder) ~= epoch then
        out[#out + 1] = 'claimed'; out[#out + 1] = tonumber(holder); out[#out + 1] = blob; out[#out + 1] = token
      else
        if not holder then
          redis.call('HSET', K_LAUNCHES, field, epoch)
          redis.call('RPUSH', K_LOG, field .. ' ' .. epoch .. ' ' .. now)
        end
        out[#out + 1] = 'launch'; out[#out + 1] = epoch; out[#out + 1] = blob; out[#out + 1] = token
      end
    end
  end
end
redis.call('LTRIM', K_LOG, -keep, -1)
return out
"""

# KEYS: leader, epoch. ARGV: holder, ttl_ms. Returns the epoch held, or 0.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local e, h = string.match(cur, '^(%d+) (.*)$')
  if h == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(e)
  end
  return 0
end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], e .. ' ' .. ARGV[1], 'PX', ARGV[2])
return e
"""

# KEYS: leader. ARGV: holder.
RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^%d+ (.*)$') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

_IDS_THEN_TOKENS = """
local out = {}
for i = 1, #ids do out[i] = ids[i] end
for s = 1, #ids, 1000 do  -- unpack() takes a few thousand values at most
  local tokens = redis.call('HMGET', KEYS[2], unpack(ids, s, math.min(s + 999, #ids)))
  for i = 1, #tokens do out[#ids + s + i - 1] = tokens[i] or '' end
end
"""

# KEYS: queue, token. ARGV: offset, limit. Returns ids then tokens (queue order).
PENDING = (
    """
local offset = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', KEYS[1], offset, offset + tonumber(ARGV[2]) - 1)
"""
    + _IDS_THEN_TOKENS
    + """
return out
"""
)

# KEYS: queue, token, seq. ARGV: cursor, limit, tier shift. Returns ids then tokens (queue order),
# then the next cursor. A queue score is tier * shift + the event sequence number of the job's
# joining the queue, so "joined after cursor" is, tier by tier, a score range: one ZRANGEBYSCORE
# per tier present, never a scan of the queue.
PENDING_SINCE = (
    """
local cursor, limit, shift = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local latest = tonumber(redis.call('GET', KEYS[3]) or '0')
local ids = {}
local from = '-inf'
while #ids <= limit do
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head == 0 then break end
  local tier = math.floor(tonumber(head[2]) / shift)
  local lo = string.format('(%.0f', tier * shift + cursor)
  local hi = string.format('(%.0f', (tier + 1) * shift)
  local got = redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'LIMIT', 0, limit + 1 - #ids)
  for i = 1, #got do ids[#ids + 1] = got[i] end
  from = string.format('%.0f', (tier + 1) * shift)
end
if #ids > limit then
  ids[#ids] = nil
  latest = cursor
end
"""
    + _IDS_THEN_TOKENS
    + """
out[#out + 1] = latest
return out
"""
)

# KEYS: token, jobs, specs. ARGV: n, then per job: id, the token the caller holds ('' = none),
# 1 when the caller lacks the spec. Returns per job: token ('' = no such job), status ('' when the
# caller's token is current), spec ('' unless asked for): a reader moves only what it lacks.
READ = """
local n = tonumber(ARGV[1])
local out = {}
for s = 0, n - 1, 500 do
  local e = math.min(s + 499, n - 1)
  local ids = {}
  for i = s, e do ids[#ids + 1] = ARGV[2 + i * 3] end
  local tokens = redis.call('HMGET', KEYS[1], unpack(ids))
  local stale, specs = {}, {}
  for k = 1, #ids do
    local i = s + k - 1
    if tokens[k] and tokens[k] ~= ARGV[3 + i * 3] then stale[#stale + 1] = ids[k] end
    if tokens[k] and ARGV[4 + i * 3] == '1' then specs[#specs + 1] = ids[k] end
  end
  local statuses, raw_specs = {}, {}
  if #stale > 0 then
    local got = redis.call('HMGET', KEYS[2], unpack(stale))
    for k = 1, #stale do statuses[stale[k]] = got[k] end
  end
  if #specs > 0 then
    local got = redis.call('HMGET', KEYS[3], unpack(specs))
    for k = 1, #specs do raw_specs[specs[k]] = got[k] end
  end
  for k = 1, #ids do
    out[#out + 1] = tokens[k] or ''
    out[#out + 1] = statuses[ids[k]] or ''
    out[#out + 1] = raw_specs[ids[k]] or ''
  end
end
return out
"""

# ---------------------------------------------------------------------- FinOps

# KEYS: budgets, audit, audit_seq, audit_jobs. ARGV: budget id, expected version (0 = must not exist),
# the budget record at expected + 1, audit entries (codec.audit_args).
# Returns {'ok', new version} or {'mismatch', actual}.
PUT_BUDGET = (
    _AUDIT
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local actual = 0
if cur then actual = tonumber(cjson.decode(cur)['version']) end
if actual ~= tonumber(ARGV[2]) then return {'mismatch', actual} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
audit_append(KEYS[2], KEYS[3], KEYS[4], 4)
return {'ok', actual + 1}
"""
)

# KEYS: budgets, audit, audit_seq, audit_jobs. ARGV: budget id, expected version (0 = any), audit entries
# (codec.audit_args).
# Returns {'ok', version, record removed} or {'mismatch', actual, ''} (actual 0: no such budget).
DELETE_BUDGET = (
    _AUDIT
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'mismatch', 0, ''} end
local actual = tonumber(cjson.decode(cur)['version'])
local want = tonumber(ARGV[2])
if want ~= 0 and actual ~= want then return {'mismatch', actual, ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
audit_append(KEYS[2], KEYS[3], KEYS[4], 3)
return {'ok', actual, cur}
"""
)

# KEYS: alert_fired, alert_seq, alerts. ARGV: "<budget>|<period>|<threshold>", the alert record.
# Returns the alert's seq, or 0 when that threshold already fired (nothing written).
RECORD_ALERT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], seq .. '-0', 'a', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], seq)
return seq
"""
