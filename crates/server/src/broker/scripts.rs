//! The server-side scripts: every state change of a job that must be atomic is one of them.
//!
//! Each runs as one Lua script in Redis (`EVALSHA`, loaded on first use), so no two nodes can
//! interleave a read and a write of the same job. The job's `fence` is the token that makes
//! delivery at-least-once but results exactly-once: [`CLAIM`] raises it each time a worker
//! takes the job, and [`PROGRESS`], [`FINISH`] and [`HANDBACK`] do nothing unless the caller
//! holds the current fence, so a worker that was presumed dead and comes back finds its late
//! result refused.
//!
//! Keys and arguments are listed above each script (`superres:owner:{name}`, an API key's
//! jobs in flight, is also named inside them, from the job's `owner`); `{job}` is the job's hash, `{stats}` the
//! cluster's counters (`queued`, `running`, `ewma_ms`), `{stream}` the model's stream of
//! job ids, `{blobs}` the sorted set of blob keys by the time they expire.

/// Accepts a job unless the queue is full or its API key has its limit of jobs in flight;
/// answers `{'ok', queued_before}`, `{'full', queued}`, `{'owner_full', in_flight}`, or
/// `{'existing', id}` for an `Idempotency-Key` seen before.
///
/// KEYS: job, stream, stats, idempotency key, the owner's in-flight counter. ARGV: id,
/// queue limit, key TTL (s), whether a key was given (`1`/`0`), the job key prefix, the
/// owner's limit (`0`: none), then the job's fields as pairs.
pub const SUBMIT: &str = r#"
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', ARGV[5] .. existing) == 1 then
    return {'existing', existing}
  end
end
local owner_limit = tonumber(ARGV[6])
if owner_limit > 0 then
  local in_flight = tonumber(redis.call('GET', KEYS[5]) or '0')
  if in_flight >= owner_limit then
    return {'owner_full', tostring(in_flight)}
  end
end
local queued = tonumber(redis.call('HGET', KEYS[3], 'queued') or '0')
if queued >= tonumber(ARGV[2]) then
  return {'full', tostring(queued)}
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local msg = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
redis.call('HSET', KEYS[1], 'msgid', msg)
redis.call('HINCRBY', KEYS[3], 'queued', 1)
if ARGV[4] == '1' then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3])
end
if owner_limit > 0 then
  redis.call('INCR', KEYS[5])
  redis.call('HSET', KEYS[1], 'counted', '1')
end
return {'ok', tostring(queued)}
"#;

/// A worker takes a delivered (or reclaimed) stream entry: `{'run', fence}`, `{'skip'}` for
/// an entry that no longer stands for a job to run (cancelled, finished, handed back), or
/// `{'failed'}` when the job has had its attempts and is failed `worker_lost`.
///
/// KEYS: job, stats, blobs. ARGV: worker, max attempts, now (ms), the entry's id, result
/// TTL (s), events channel.
pub const CLAIM: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st or redis.call('HGET', KEYS[1], 'msgid') ~= ARGV[4] then
  return {'skip'}
end
if st == 'running' then
  local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
  if attempts >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'status', 'failed', 'error_code', 'worker_lost',
      'error', 'the job was lost with its worker ' .. attempts .. ' time(s), the limit (--max-attempts)',
      'finished_ms', ARGV[3])
    redis.call('HINCRBY', KEYS[2], 'running', -1)
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    redis.call('ZADD', KEYS[3], ARGV[3], redis.call('HGET', KEYS[1], 'input'))
    if redis.call('HGET', KEYS[1], 'counted') == '1' then
      redis.call('DECR', 'superres:owner:' .. redis.call('HGET', KEYS[1], 'owner'))
    end
    redis.call('PUBLISH', ARGV[6], 'failed')
    return {'failed'}
  end
elseif st == 'queued' then
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  redis.call('HINCRBY', KEYS[2], 'running', 1)
else
  return {'skip'}
end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_ms', ARGV[3])
redis.call('PUBLISH', ARGV[6], 'running')
return {'run', tostring(fence)}
"#;

/// The holder's heartbeat: keeps the entry its own (resets its idle time, so it is not
/// reclaimed) and records progress. Answers `ok`, `cancel` (stop: the job was cancelled) or
/// `stale` (the fence moved on: stop, the job is someone else's now).
///
/// KEYS: job, stream. ARGV: fence, progress (empty: unchanged), group, consumer, entry id,
/// events channel, frames done (empty: none).
pub const PROGRESS: &str = r#"
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 'stale'
end
redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID')
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[2])
  redis.call('PUBLISH', ARGV[6], 'progress')
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  return 'cancel'
end
return 'ok'
"#;

/// Records a job's outcome if the caller holds the current fence (`ok`), else refuses it
/// (`stale`). Acknowledges the entry, sets the job's time to live and schedules its result
/// blob to be deleted with it.
///
/// KEYS: job, stats, stream, blobs. ARGV: fence, status, group, entry id, TTL (s), now (ms),
/// events channel, run time (ms), when the blobs expire (ms), the result's blob key (empty:
/// none), then the outcome's fields as pairs.
pub const FINISH: &str = r#"
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 'stale'
end
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_ms', ARGV[6], unpack(fields))
redis.call('HINCRBY', KEYS[2], 'running', -1)
if redis.call('HGET', KEYS[1], 'counted') == '1' then
  redis.call('DECR', 'superres:owner:' .. redis.call('HGET', KEYS[1], 'owner'))
end
if ARGV[2] == 'done' then
  local run = tonumber(ARGV[8])
  local avg = tonumber(redis.call('HGET', KEYS[2], 'ewma_ms') or '-1')
  if avg < 0 then avg = run else avg = 0.3 * run + 0.7 * avg end
  redis.call('HSET', KEYS[2], 'ewma_ms', tostring(avg))
end
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[10])
end
redis.call('PUBLISH', ARGV[7], ARGV[2])
return 'ok'
"#;

/// A worker that is stopping gives a running job back to the queue (at its end: a new
/// entry), as if it had never been taken (a hand-back is not a failed attempt). `ok` or `stale`.
///
/// KEYS: job, stats, stream. ARGV: fence, group, entry id, events channel.
pub const HANDBACK: &str = r#"
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 'stale'
end
local msg = redis.call('XADD', KEYS[3], '*', 'id', redis.call('HGET', KEYS[1], 'id'))
redis.call('XACK', KEYS[3], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'queued', 'msgid', msg, 'worker', '', 'progress', '0')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HINCRBY', KEYS[2], 'running', -1)
redis.call('HINCRBY', KEYS[2], 'queued', 1)
redis.call('PUBLISH', ARGV[4], 'queued')
return 'ok'
"#;

/// Cancels a queued job (`{'cancelled'}`), asks a running one to stop (`{'running'}`), or
/// forgets a finished one with its result (`{'forgotten'}`); `{'missing'}` for a job that
/// does not exist or is another owner's.
///
/// KEYS: job, stats, stream, blobs. ARGV: owner (empty: none), now (ms), TTL (s), events
/// channel.
pub const CANCEL: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return {'missing'}
end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'error_code', 'cancelled',
    'error', 'the job was cancelled', 'finished_ms', ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  if redis.call('HGET', KEYS[1], 'counted') == '1' then
    redis.call('DECR', 'superres:owner:' .. ARGV[1])
  end
  redis.call('XDEL', KEYS[3], redis.call('HGET', KEYS[1], 'msgid'))
  redis.call('ZADD', KEYS[4], ARGV[2], redis.call('HGET', KEYS[1], 'input'))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('PUBLISH', ARGV[4], 'cancelled')
  return {'cancelled'}
elseif st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return {'running'}
end
local result = redis.call('HGET', KEYS[1], 'result')
if result and result ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[2], result)
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[4], 'gone')
return {'forgotten'}
"#;

/// Jobs ahead of a queued one in its model's stream: entries after the group's last
/// delivered one and before the job's own.
///
/// KEYS: stream. ARGV: group, the job's entry id.
pub const POSITION: &str = r#"
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local name, delivered = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
    end
    if name == ARGV[1] and delivered then last = delivered end
  end
end
local ahead = redis.call('XRANGE', KEYS[1], '(' .. last, '(' .. ARGV[2])
return #ahead
"#;
