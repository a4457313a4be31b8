/**
 * A Redis store for `@effect/experimental`'s RateLimiter, so every instance
 * counts against the same limits.
 *
 * The connection is `redisConnection`'s: while Redis cannot be reached,
 * commands fail within about a second and the limits let requests through
 * (see `RateLimits`). Both algorithms run as Lua scripts, atomically, on
 * Redis's clock.
 */
import { RateLimiter } from "@effect/experimental"
import { Duration, Effect, Layer, type Redacted } from "effect"
import type { Redis } from "ioredis"
import { redisConnection } from "../Redis.js"

const fixedWindowScript = `
local count = tonumber(redis.call("GET", KEYS[1]) or "0")
local tokens = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local ttl = redis.call("PTTL", KEYS[1])
if ttl < 0 then ttl = 0 end
if limit and count + tokens > limit then
  return { count + tokens, ttl }
end
count = count + tokens
ttl = ttl + refill * tokens
redis.call("SET", KEYS[1], count, "PX", ttl)
return { count, ttl }
`

const tokenBucketScript = `
local tokens = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local overflow = ARGV[4] == "1"
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call("HMGET", KEYS[1], "tokens", "at")
local current = tonumber(state[1])
local at = tonumber(state[2])
if not current then
  current = limit
  at = now
else
  local add = math.floor((now - at) / refill)
  if add > 0 then
    current = math.min(limit, current + add)
    at = at + add * refill
  end
end
local after = current - tokens
if overflow or after >= 0 then current = after end
redis.call("HSET", KEYS[1], "tokens", current, "at", at)
redis.call("PEXPIRE", KEYS[1], math.max(1, (limit - current + 1) * refill))
return after
`

interface ScriptedRedis extends Redis {
  fixedWindow(key: string, tokens: number, refillMillis: number, limit: string): Promise<[number, number]>
  tokenBucket(key: string, tokens: number, refillMillis: number, limit: number, overflow: string): Promise<number>
}

const storeError = (cause: unknown) =>
  new RateLimiter.RateLimitStoreError({ message: "Rate limit store unavailable", cause })

const refillMillis = (refillRate: Duration.Duration) => Math.max(1, Math.ceil(Duration.toMillis(refillRate)))

export const layerRedisStore = (options: { readonly url: Redacted.Redacted<string>; readonly keyPrefix: string }) =>
  Layer.scoped(
    RateLimiter.RateLimiterStore,
    Effect.gen(function*() {
      const redis = (yield* redisConnection({
        url: options.url,
        keyPrefix: options.keyPrefix,
        whileDown: "rate limits are not enforced"
      })) as ScriptedRedis
      redis.defineCommand("fixedWindow", { numberOfKeys: 1, lua: fixedWindowScript })
      redis.defineCommand("tokenBucket", { numberOfKeys: 1, lua: tokenBucketScript })

      return RateLimiter.RateLimiterStore.of({
        fixedWindow: (request) =>
          Effect.tryPromise({
            try: () =>
              redis.fixedWindow(
                request.key,
                request.tokens,
                refillMillis(request.refillRate),
                request.limit === undefined ? "" : String(request.limit)
              ),
            catch: storeError
          }).pipe(Effect.map(([count, ttl]) => [Number(count), Number(ttl)] as const)),
        tokenBucket: (request) =>
          Effect.tryPromise({
            try: () =>
              redis.tokenBucket(
                request.key,
                request.tokens,
                refillMillis(request.refillRate),
                request.limit,
                request.allowOverflow ? "1" : "0"
              ),
            catch: storeError
          }).pipe(Effect.map(Number))
      })
    })
  )
