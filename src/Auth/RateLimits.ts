/**
 * Abuse limits on the front door (register, login, refresh), per client
 * address and per account; limits on how many answers a user
 * (`CHAT_RATE_LIMIT_PER_USER`) and an API key (its `rateLimitPerMinute`) ask
 * models for; and, when set, general limits on every request of a client
 * address (`RATE_LIMIT_PER_ADDRESS`) and every authenticated request of a user
 * (`RATE_LIMIT_PER_USER`), from which `RATE_LIMIT_EXEMPT_ADDRESSES` and the
 * `ratelimit:exempt` permission exempt. With `@effect/experimental`'s
 * RateLimiter: in process memory by default, in Redis when `REDIS_URL` is set
 * so the limits hold across every instance.
 *
 * Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining`
 * and `RateLimit-Reset`; an exceeded limit answers 429 with `Retry-After`.
 */
import { RateLimiter } from "@effect/experimental"
import { HttpApp, HttpServerResponse } from "@effect/platform"
import { Clock, Duration, Effect, FiberRef, Layer, Option } from "effect"
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import { type AddressRange, AppConfig, type BudgetPeriod } from "../Config.js"
import type { Actor, Permission } from "../Domain/Actor.js"
import { RateLimited } from "../Domain/Errors.js"
import type { UserId } from "../Domain/Ids.js"
import { UsageRepo } from "../Gateway/UsageRepo.js"
import { CurrentClient } from "../Http/Middleware.js"
import { UsersRepo } from "../Users/UsersRepo.js"
import { layerRedisStore } from "./RedisRateLimitStore.js"

/**
 * Whose tokens a model's work is counted against: an actor (a user through a session or an API key),
 * or a user whose data the server works on in the background, with no credential of theirs.
 */
export type BudgetHolder = Pick<Actor, "userId" | "apiKeyId" | "keyTokenBudget" | "tokenBudget" | "can">

export interface Limit {
  readonly key: string
  readonly limit: number
  readonly window: Duration.Duration
}

/** Accounts are named in the store by a digest: emails have no business in Redis keys. */
const accountKey = (account: string) =>
  Crypto.createHash("sha256").update(account.toLowerCase()).digest("base64url").slice(0, 22)

const seconds = (duration: Duration.Duration) => Math.max(1, Math.ceil(Duration.toSeconds(duration)))

/**
 * The limiter refills one token every window / limit; its Redis store needs
 * that in whole milliseconds. Rounding the window up to a multiple of the
 * limit keeps every limit exact (at the cost of a slightly longer window).
 */
const storeWindow = (limit: Limit) => {
  const millis = Math.max(1, Math.ceil(Duration.toMillis(limit.window) / limit.limit)) * limit.limit
  return Duration.millis(millis)
}

/**
 * Whether `address` lies in one of `ranges` (Node's `BlockList`, which also matches an IPv4 address
 * written as IPv6, `::ffff:a.b.c.d`, against IPv4 networks).
 */
const addressMatcher = (ranges: ReadonlyArray<AddressRange>): (address: string | null) => boolean => {
  if (ranges.length === 0) return () => false
  const list = new Net.BlockList()
  for (const range of ranges) list.addSubnet(range.address, range.prefix, range.family)
  return (address) => {
    if (address === null) return false
    const version = Net.isIP(address)
    return version !== 0 && list.check(address, version === 4 ? "ipv4" : "ipv6")
  }
}

/** The calendar period (UTC; weeks start on Monday) that `now` falls in: its start, and the next one's. */
export const budgetPeriod = (period: BudgetPeriod, now: number): { readonly start: number; readonly end: number } => {
  const at = new Date(now)
  const [year, month, day] = [at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()]
  switch (period) {
    case "day":
      return { start: Date.UTC(year, month, day), end: Date.UTC(year, month, day + 1) }
    case "week": {
      const monday = day - (at.getUTCDay() + 6) % 7
      return { start: Date.UTC(year, month, monday), end: Date.UTC(year, month, monday + 7) }
    }
    case "month":
      return { start: Date.UTC(year, month, 1), end: Date.UTC(year, month + 1, 1) }
  }
}

const setHeaders = (headers: Record<string, string>) =>
  HttpApp.appendPreResponseHandler((_request, response) =>
    Effect.succeed(HttpServerResponse.setHeaders(response, headers))
  )

export class RateLimits extends Effect.Service<RateLimits>()("Auth/RateLimits", {
  effect: Effect.gen(function*() {
    const limiter = yield* RateLimiter.RateLimiter
    const { apiRateLimit, auth, chat } = yield* AppConfig
    const usage = yield* UsageRepo
    const users = yield* UsersRepo
    const exempt = addressMatcher(apiRateLimit.exemptAddresses)

    /**
     * Takes one token from every limit; fails with `RateLimited` if any is
     * exhausted. Headers describe the most constrained limit.
     */
    const consume = (
      limits: ReadonlyArray<Limit>,
      message = "Too many attempts; try again later"
    ): Effect.Effect<void, RateLimited> =>
      Effect.gen(function*() {
        const results = yield* Effect.forEach(
          limits,
          (limit) =>
            limiter.consume({ key: limit.key, limit: limit.limit, window: storeWindow(limit), onExceeded: "fail" })
              .pipe(Effect.either),
          { concurrency: "unbounded" }
        )
        const exceeded = results.flatMap((result) =>
          result._tag === "Left" && result.left.reason === "Exceeded" ? [result.left] : []
        )
        if (exceeded.length > 0) {
          const retryAfter = seconds(
            exceeded.map((error) => error.retryAfter).reduce(Duration.max)
          )
          const limit = exceeded[0]!.limit
          // `Retry-After` comes from the error itself (its `retryAfterSeconds`), as for every error that waits.
          yield* setHeaders({
            "ratelimit-limit": String(limit),
            "ratelimit-remaining": "0",
            "ratelimit-reset": String(retryAfter)
          })
          return yield* new RateLimited({ message, retryAfterSeconds: retryAfter })
        }
        // A store failure (Redis unreachable, logged by the store) must not lock everyone out: let it through.
        const passed = results.flatMap((result) => (result._tag === "Right" ? [result.right] : []))
        const tightest = passed.reduce<RateLimiter.ConsumeResult | undefined>(
          (worst, current) => (worst === undefined || current.remaining < worst.remaining ? current : worst),
          undefined
        )
        if (tightest) {
          yield* setHeaders({
            "ratelimit-limit": String(tightest.limit),
            "ratelimit-remaining": String(Math.max(0, tightest.remaining)),
            "ratelimit-reset": String(seconds(tightest.resetAfter))
          })
        }
      }).pipe(Effect.withSpan("RateLimits.consume"))

    /** The front door's limits for an attempt on `account` (an email, a username, a session family). */
    const authAttempt = (endpoint: string, account: string | undefined) =>
      Effect.flatMap(FiberRef.get(CurrentClient), (client) =>
        consume([
          {
            key: `auth:${endpoint}:address:${client.address ?? "unknown"}`,
            limit: auth.rateLimitPerAddress,
            window: auth.rateLimitWindow
          },
          ...(account === undefined
            ? []
            : [{
              key: `auth:${endpoint}:account:${accountKey(account)}`,
              limit: auth.rateLimitPerAccount,
              window: auth.rateLimitWindow
            }])
        ]))

    /** A reaction to a share, which anyone may give without an account: `SHARE_REACTIONS_PER_ADDRESS`. */
    const shareReaction = Effect.flatMap(FiberRef.get(CurrentClient), (client) =>
      consume([{
        key: `public:share-reaction:address:${client.address ?? "unknown"}`,
        limit: auth.shareReactionsPerAddress,
        window: auth.rateLimitWindow
      }], "Too many reactions; try again later"))

    /**
     * Whether this is the first view of share `shareId` from the client's address within the hour:
     * views are counted once per address and hour, so reloading a page does not inflate them. A store
     * failure counts the view.
     */
    const firstShareView = (shareId: string): Effect.Effect<boolean> =>
      Effect.flatMap(FiberRef.get(CurrentClient), (client) => {
        const limit: Limit = {
          key: `public:share-view:${shareId}:address:${client.address ?? "unknown"}`,
          limit: 1,
          window: Duration.hours(1)
        }
        return limiter.consume({ key: limit.key, limit: 1, window: storeWindow(limit), onExceeded: "fail" }).pipe(
          Effect.as(true),
          Effect.catchAll((error) => Effect.succeed(error.reason !== "Exceeded"))
        )
      })

    /**
     * Whether `actor` has tokens left in this period's budgets: their user's (their role's, else
     * `TOKEN_BUDGET_PER_USER`; holders of `ratelimit:exempt` have none) and their API key's own, if
     * it has one. Budgets are checked before an answer, never during one: the answer that crosses one
     * is finished, and the next is refused until the period renews.
     */
    const tokenBudget = (actor: BudgetHolder): Effect.Effect<void, RateLimited> =>
      Option.isNone(budgetTokens(actor)) && actor.keyTokenBudget === undefined
        ? Effect.void
        : Effect.flatMap(budgetOf(actor), (budget) => {
          const spent = budget.tokens !== null && budget.spent >= budget.tokens
            ? `Your token budget for this ${budget.period} (${budget.tokens} tokens)`
            : budget.key !== null && budget.key.spent >= budget.key.tokens
            ? `This API key's token budget for this ${budget.period} (${budget.key.tokens} tokens)`
            : null
          if (spent === null) return Effect.void
          return Effect.flatMap(Clock.currentTimeMillis, (now) =>
            new RateLimited({
              message: `${spent} is spent; it renews at ${new Date(budget.end).toISOString()}`,
              retryAfterSeconds: Math.max(1, Math.ceil((budget.end - now) / 1000))
            }))
        })

    /** The budget that holds `actor`'s user: their role's, else the server's; none for `ratelimit:exempt`. */
    const budgetTokens = (actor: BudgetHolder): Option.Option<number> =>
      actor.can("ratelimit:exempt")
        ? Option.none()
        : Option.orElse(Option.fromNullable(actor.tokenBudget), () => chat.tokenBudget.perUser)

    /**
     * Where `actor` stands in this budget period: their user's budget (null: none) and what the user
     * spent; their API key's own budget and what the key spent, when it has one; the period.
     */
    const budgetOf = (actor: BudgetHolder) =>
      Effect.gen(function*() {
        const { period } = chat.tokenBudget
        const { end, start } = budgetPeriod(period, yield* Clock.currentTimeMillis)
        const since = new Date(start).toISOString()
        return {
          tokens: Option.getOrNull(budgetTokens(actor)),
          spent: yield* usage.tokensSince({ userId: actor.userId }, since),
          key: actor.apiKeyId === undefined || actor.keyTokenBudget === undefined ? null : {
            tokens: actor.keyTokenBudget,
            spent: yield* usage.tokensSince({ apiKeyId: actor.apiKeyId }, since)
          },
          exempt: actor.can("ratelimit:exempt"),
          period,
          start,
          end
        }
      })

    /** `CHAT_RATE_LIMIT_PER_USER` and the API key's own limit per minute. */
    const answerRate = (actor: Actor): Effect.Effect<void, RateLimited> => {
      const limits: Array<Limit> = []
      if (Option.isSome(chat.rateLimit)) {
        const { perUser, window } = chat.rateLimit.value
        limits.push({ key: `chat:user:${actor.userId}`, limit: perUser, window })
      }
      if (actor.apiKeyId !== undefined && actor.keyRateLimitPerMinute !== undefined) {
        limits.push({
          key: `chat:key:${actor.apiKeyId}`,
          limit: actor.keyRateLimitPerMinute,
          window: Duration.minutes(1)
        })
      }
      return limits.length === 0 ? Effect.void : consume(limits, "Too many answers asked for; try again later")
    }

    /**
     * One answer asked of a model by `actor` (a chat turn, a gateway completion): within its user's
     * token budget (`TOKEN_BUDGET_PER_USER`), its user's `CHAT_RATE_LIMIT_PER_USER`, and its API
     * key's own limit per minute if it has one. Free when none applies.
     */
    const modelRequest = (actor: Actor): Effect.Effect<void, RateLimited> =>
      Effect.zipRight(tokenBudget(actor), answerRate(actor))

    /**
     * Work the server does with a model in the background on `userId`'s data, asked for by no request
     * (the embedding of an uploaded file's passages, of their knowledge graph's entities): within
     * that user's token budget (their role's, else `TOKEN_BUDGET_PER_USER`; none for
     * `ratelimit:exempt`), as their own answers are. Free for a user who no longer exists: the work
     * finds nothing of theirs either.
     */
    const ownerBudget = (userId: UserId): Effect.Effect<void, RateLimited> =>
      Effect.flatMap(users.findById(userId), (found) => {
        if (Option.isNone(found)) return Effect.void
        const { roleTokenBudget, rolePermissions } = found.value
        return tokenBudget({
          userId,
          can: (permission: Permission) => rolePermissions.includes(permission),
          ...(roleTokenBudget === null ? {} : { tokenBudget: roleTokenBudget })
        })
      })

    const tooManyRequests = "Too many requests; try again later"

    /**
     * Any request from the client's address, within `RATE_LIMIT_PER_ADDRESS`. Free when it is not
     * set or the address is exempt.
     */
    const addressRequest: Effect.Effect<void, RateLimited> = Option.match(apiRateLimit.perAddress, {
      onNone: () => Effect.void,
      onSome: (limit) =>
        Effect.flatMap(FiberRef.get(CurrentClient), (client) =>
          exempt(client.address)
            ? Effect.void
            : consume([{
              key: `api:address:${client.address ?? "unknown"}`,
              limit,
              window: apiRateLimit.window
            }], tooManyRequests))
    })

    /**
     * An authenticated request of `actor`'s user (any credential), within `RATE_LIMIT_PER_USER`.
     * Free when it is not set, the actor holds `ratelimit:exempt` or the address is exempt.
     */
    const userRequest = (actor: Actor): Effect.Effect<void, RateLimited> =>
      Option.match(apiRateLimit.perUser, {
        onNone: () => Effect.void,
        onSome: (limit) =>
          actor.can("ratelimit:exempt")
            ? Effect.void
            : Effect.flatMap(FiberRef.get(CurrentClient), (client) =>
              exempt(client.address)
                ? Effect.void
                : consume([{ key: `api:user:${actor.userId}`, limit, window: apiRateLimit.window }], tooManyRequests))
      })

    return {
      consume,
      authAttempt,
      shareReaction,
      firstShareView,
      modelRequest,
      ownerBudget,
      budgetOf,
      addressRequest,
      userRequest
    } as const
  })
}) {}

/** The limiter's store: Redis when `REDIS_URL` is set (shared by every instance), else process memory. */
export const RateLimiterLive = Layer.unwrapEffect(
  Effect.map(AppConfig, ({ redis }) =>
    RateLimiter.layer.pipe(
      Layer.provide(
        Option.match(redis.url, {
          onNone: () => RateLimiter.layerStoreMemory,
          onSome: (url) => layerRedisStore({ url, keyPrefix: `${redis.keyPrefix}ratelimit:` })
        })
      )
    ))
)
