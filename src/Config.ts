/**
 * Every setting the server reads from its environment, read once, here.
 *
 * Other modules depend on `AppConfig` (never on `process.env`), so tests can
 * run the whole server against a `ConfigProvider.fromMap`.
 */
import { Config, ConfigError, ConfigProvider, Duration, Effect, Either, LogLevel, Option, Redacted } from "effect"
import * as Net from "node:net"

export type NodeEnv = "development" | "production" | "test"
export type LogFormat = "json" | "pretty"

/**
 * The environment as the entry points read it: a variable set to the empty string (`KEY=` in an
 * env file or a compose file) counts as unset, so it takes its default instead of failing as an
 * empty value.
 */
export const environment = (
  env: Readonly<Record<string, string | undefined>> = process.env
): ConfigProvider.ConfigProvider =>
  ConfigProvider.fromMap(
    new Map(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== ""))
  )

const byteUnits: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3
}

/** Parses `1048576`, `512kb` or `10mb` into a number of bytes. */
export const parseByteSize = (input: string): Either.Either<number, string> => {
  const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(input)
  const unit = match?.[2]?.toLowerCase() ?? ""
  const factor = byteUnits[unit]
  if (!match || factor === undefined) {
    return Either.left(`Expected a size such as 1048576, 512kb, 10mb or 1gb, received "${input}"`)
  }
  const bytes = Number(match[1]) * factor
  return bytes > 0 && Number.isSafeInteger(bytes) ? Either.right(bytes) : Either.left(`Expected a positive size`)
}

const byteSize = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) => Either.mapLeft(parseByteSize(raw), (message) => ConfigError.InvalidData([], message)))
  )

const commaList = (name: string) =>
  Config.string(name).pipe(
    Config.map((raw) => raw.split(",").map((item) => item.trim()).filter((item) => item.length > 0))
  )

const logLevels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** `trace`, `debug`, `info`, `warn`, `error`, `fatal` or `none`, in any case. */
const logLevel = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) => {
      const level = logLevels[raw.trim().toLowerCase()]
      return level
        ? Either.right(level)
        : Either.left(ConfigError.InvalidData([], `Expected one of ${Object.keys(logLevels).join(", ")}`))
    })
  )

const positiveInt = (name: string) =>
  Config.integer(name).pipe(Config.validate({ message: "Expected a positive integer", validation: (n) => n > 0 }))

export interface DatabaseSettings {
  /** `None` selects the embedded SQLite database under `DATA_DIR`. */
  readonly url: Option.Option<Redacted.Redacted<string>>
  readonly poolSize: number
  readonly statementTimeout: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly migrateOnStart: boolean
  /**
   * SQLite: how long a statement waits for a lock another process holds (the server's own
   * connection never contends with itself). The wait blocks the event loop, every stream with it.
   */
  readonly sqliteBusyTimeout: Duration.Duration
}

export interface AuthSettings {
  readonly accessTokenTtl: Duration.Duration
  readonly refreshTokenTtl: Duration.Duration
  /** scrypt cost as log2(N): 17 is OWASP's recommendation (128 MiB per hash with r = 8). */
  readonly passwordHashCost: number
  /** How many password hashes may run at once (each holds 128 << (cost - 17) MiB). */
  readonly passwordHashConcurrency: number
  /** How many requests may wait for a hashing slot; one more is answered 503 at once. */
  readonly passwordHashQueueLimit: number
  readonly rateLimitWindow: Duration.Duration
  readonly rateLimitPerAddress: number
  readonly rateLimitPerAccount: number
  /** Reactions to shares one client address may give per `rateLimitWindow`. */
  readonly shareReactionsPerAddress: number
  /** `open`: anyone may register; `closed`: only the first user does, then administrators create accounts. */
  readonly registration: "open" | "closed"
}

/**
 * The general limits on API requests, beside the front door's (`AuthSettings`), the models'
 * (`ChatSettings.rateLimit`) and the shares' reactions: every request from one client address, and
 * every authenticated request of one user. Off unless set.
 */
export interface ApiRateLimitSettings {
  readonly window: Duration.Duration
  /** Requests one client address may send per `window` (health checks and metrics aside). */
  readonly perAddress: Option.Option<number>
  /** Authenticated requests one user may send per `window`, whatever the address or the credential. */
  readonly perUser: Option.Option<number>
  /**
   * Addresses and networks (`10.0.0.0/8`, `::1`) to which neither general limit applies: a
   * trusted service, the monitoring. Users are exempted by the `ratelimit:exempt` permission.
   */
  readonly exemptAddresses: ReadonlyArray<AddressRange>
}

/** One address (`prefix` its full length) or a network in CIDR notation. */
export interface AddressRange {
  readonly address: string
  readonly prefix: number
  readonly family: "ipv4" | "ipv6"
}

/** `RATE_LIMIT_EXEMPT_ADDRESSES`: addresses or CIDR networks, comma-separated. */
const addressRanges = (name: string) =>
  // Split here rather than with `commaList`: a failure after a `Config.map` would lose the variable's name.
  Config.string(name).pipe(
    Config.mapOrFail((raw) => {
      const ranges: Array<AddressRange> = []
      for (const entry of raw.split(",").map((item) => item.trim()).filter((item) => item.length > 0)) {
        const [address = "", prefix, ...rest] = entry.split("/")
        const version = Net.isIP(address)
        const bits = version === 4 ? 32 : 128
        const length = prefix === undefined ? bits : /^\d{1,3}$/.test(prefix) ? Number(prefix) : -1
        if (version === 0 || rest.length > 0 || length < 0 || length > bits) {
          return Either.left(ConfigError.InvalidData([], `Expected addresses or CIDR networks, got "${entry}"`))
        }
        ranges.push({ address, prefix: length, family: version === 4 ? "ipv4" : "ipv6" })
      }
      return Either.right(ranges)
    })
  )

export interface TelemetrySettings {
  /**
   * `None`: spans stay in the process. `Some`: they are exported over OTLP/HTTP (JSON) to
   * `<endpoint>/v1/traces`, as OpenTelemetry's SDKs do with the same variable.
   */
  readonly otlpEndpoint: Option.Option<string>
  /** Headers sent with each export (an API key of the collector, say). */
  readonly otlpHeaders: Redacted.Redacted<Record<string, string>>
  readonly serviceName: string
  /** How often finished spans are sent. */
  readonly exportInterval: Duration.Duration
}

/**
 * `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, values URL-encoded. The
 * error names the variable only: the values may be secrets.
 */
const otlpHeaders = (name: string) =>
  Config.redacted(name).pipe(
    Config.mapOrFail((raw) => {
      const headers: Record<string, string> = {}
      for (const pair of Redacted.value(raw).split(",")) {
        if (pair.trim().length === 0) continue
        const at = pair.indexOf("=")
        const key = at > 0 ? pair.slice(0, at).trim() : ""
        if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(key)) {
          return Either.left(ConfigError.InvalidData([], "Expected key=value pairs separated by commas"))
        }
        try {
          headers[key.toLowerCase()] = decodeURIComponent(pair.slice(at + 1).trim())
        } catch {
          return Either.left(ConfigError.InvalidData([], "Expected URL-encoded header values"))
        }
      }
      return Either.right(Redacted.make(headers))
    })
  )

export interface RedisSettings {
  /** `None`: rate limits and caches live in process memory. */
  readonly url: Option.Option<Redacted.Redacted<string>>
  readonly keyPrefix: string
}

export interface ModelSettings {
  /** An Ollama declared by the environment, registered at start-up. */
  readonly ollamaUrl: Option.Option<string>
  /** Without `OLLAMA_URL`: look for an Ollama at its default address at start-up. */
  readonly ollamaAutodetect: boolean
  readonly openAiApiKey: Option.Option<Redacted.Redacted<string>>
  readonly openAiBaseUrl: Option.Option<string>
  readonly anthropicApiKey: Option.Option<Redacted.Redacted<string>>
  readonly anthropicBaseUrl: string
  /** How often Ollama's running models are read back; zero turns it off. */
  readonly statusPollInterval: Duration.Duration
  /**
   * How long a chat turn's model and provider, once read, are used without reading them again.
   * A change made through this instance applies at once; one made through another instance
   * within this time. Zero reads them on every turn.
   */
  readonly resolveCacheTtl: Duration.Duration
}

export interface CompressionSettings {
  /** Whether responses are compressed for clients that accept it. */
  readonly enabled: boolean
  /** Bodies smaller than this (bytes) go out as they are. */
  readonly minSize: number
}

export interface EventsSettings {
  readonly maxSocketsPerUser: number
  /** Unsent bytes a socket may hold before it is dropped as too slow. */
  readonly socketBufferBytes: number
  readonly heartbeat: Duration.Duration
}

export interface ChatSettings {
  /** Longest wait for a provider's first chunk (a local model may have to load first). */
  readonly firstChunkTimeout: Duration.Duration
  /** Longest silence between two chunks of a streamed answer. */
  readonly idleTimeout: Duration.Duration
  /** Attempts after the first, on connection failures, 429 and 5xx, before any chunk arrived. */
  readonly retryAttempts: number
  readonly retryBaseDelay: Duration.Duration
  readonly retryMaxDelay: Duration.Duration
  /** Consecutive failed calls after which a provider is short-circuited. */
  readonly breakerThreshold: number
  /** How long a short-circuited provider is left alone before one trial call. */
  readonly breakerCooldown: Duration.Duration
  /** How often a growing answer is written to the database (at most this much is lost on a crash). */
  readonly flushInterval: Duration.Duration
  /**
   * How long an answer may go without a write before it counts as abandoned by a crashed
   * instance (and is marked `incomplete`); a live generation writes at least three times as often.
   */
  readonly streamLease: Duration.Duration
  /** How long a finished generation's events stay in memory for a client resuming its stream. */
  readonly resumeRetention: Duration.Duration
  /** Context window assumed for a model that does not report one. */
  readonly defaultContextWindow: number
  /** The development model (a deterministic echo, not an LLM): on by default outside production. */
  readonly developmentModel: boolean
  /**
   * How many answers one user may ask models for per window (chat turns on every transport, and the
   * gateway's completions, together); `None`: no limit.
   */
  readonly rateLimit: Option.Option<{ readonly perUser: number; readonly window: Duration.Duration }>
  /**
   * The tokens (prompt and completion, as providers report them) one user may spend per calendar
   * period (UTC), chat and gateway together: `perUser` for everyone (`None`: no budget), unless
   * their role has a budget of its own.
   */
  readonly tokenBudget: { readonly perUser: Option.Option<number>; readonly period: BudgetPeriod }
}

export type BudgetPeriod = "day" | "week" | "month"

export interface JobsSettings {
  /** `None`: background jobs are queued in the database; `Some`: in RabbitMQ. */
  readonly amqpUrl: Option.Option<Redacted.Redacted<string>>
  /** RabbitMQ: the prefix of this deployment's queue names. */
  readonly queuePrefix: string
  /** Database queue: how often an idle worker looks for new jobs. */
  readonly pollInterval: Duration.Duration
  /** Jobs of one kind this instance runs at once. */
  readonly concurrency: number
  /** Attempts of a job (the first included) before it is given up. */
  readonly maxAttempts: number
  /** The wait before a failed job is offered again, doubled at each attempt (with jitter). */
  readonly retryBaseDelay: Duration.Duration
  /** The longest such wait (a worker is held for it). */
  readonly retryMaxDelay: Duration.Duration
  /** The longest a job's handler may run; past it, the attempt fails. */
  readonly timeout: Duration.Duration
  /** Database queue: how long a finished or given-up job stays in `job_queue` before it is removed. */
  readonly retention: Duration.Duration
}

export interface FilesSettings {
  /** Where uploaded files' contents are kept (shared by every instance when there are several). */
  readonly dir: string
  /** The largest file accepted, in bytes: a bigger upload is refused while it is read. */
  readonly maxSize: number
  /** Content types accepted, as detected from the content (`text/*` matches every text type). */
  readonly allowedTypes: ReadonlyArray<string>
  /** Characters of a file's text kept by its analysis and given to the model. */
  readonly analysisMaxChars: number
  /** The largest image a chat question may carry to the model, in bytes. */
  readonly chatImageMaxSize: number
  /** The bytes of files each user may keep; `None`: no limit. */
  readonly quotaPerUser: Option.Option<number>
  /** `FILES_STORAGE=s3`: contents in an S3-compatible object store rather than under `dir` (then only a scratch space). */
  readonly s3: Option.Option<S3Settings>
  /**
   * `FILES_ENCRYPTION=on` (the default): each new content is stored encrypted under its own data key,
   * sealed under `ENCRYPTION_KEYS` (`Files/ContentCipher.ts`); `off`: stored as it is. Either way
   * every content stored before stays readable: its row says how it is kept.
   */
  readonly encryption: boolean
}

export interface EmbeddingSettings {
  /**
   * `EMBEDDING_MODEL`: the model the server embeds with, for the knowledge graph's semantic search
   * and the retrieval of attached files' passages, named as the gateway names models (its listed id,
   * `<provider>/<model>`, or its UUID); `None`: both off. Nothing is checked at start-up (the
   * provider may be down): the embedding jobs and the searches report a name that means no usable
   * model, or one that cannot embed.
   */
  readonly model: Option.Option<string>
}

/** An S3-compatible object store (AWS S3, MinIO, R2, Garage, Ceph) holding files' contents. */
export interface S3Settings {
  /** `https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`; no trailing slash. */
  readonly endpoint: string
  readonly bucket: string
  readonly region: string
  readonly accessKeyId: string
  readonly secretAccessKey: Redacted.Redacted<string>
  /** Put before every key (`webplus/`); may be empty. */
  readonly prefix: string
  /** `http://host/bucket/key` (MinIO and most self-hosted stores) rather than `http://bucket.host/key`. */
  readonly forcePathStyle: boolean
}

/** The object store's settings, each required one read (and named when missing) only with `FILES_STORAGE=s3`. */
const s3Settings = Effect.gen(function*() {
  const storage = yield* Config.literal("local", "s3")("FILES_STORAGE").pipe(Config.withDefault("local" as const))
  if (storage === "local") return Option.none<S3Settings>()
  const settings: S3Settings = {
    endpoint: yield* Config.nonEmptyString("S3_ENDPOINT").pipe(
      Config.validate({
        message: "Expected an http:// or https:// URL without credentials",
        validation: (raw) => {
          const url = URL.canParse(raw) ? new URL(raw) : undefined
          return url !== undefined && (url.protocol === "http:" || url.protocol === "https:") && url.username === "" &&
            url.password === "" && url.search === "" && url.hash === ""
        }
      }),
      Config.map((url) => url.replace(/\/+$/, ""))
    ),
    bucket: yield* Config.nonEmptyString("S3_BUCKET"),
    region: yield* Config.nonEmptyString("S3_REGION").pipe(Config.withDefault("us-east-1")),
    accessKeyId: yield* Config.nonEmptyString("S3_ACCESS_KEY_ID"),
    secretAccessKey: yield* Config.redacted(Config.nonEmptyString("S3_SECRET_ACCESS_KEY")),
    prefix: yield* Config.string("S3_PREFIX").pipe(Config.withDefault("")),
    forcePathStyle: yield* Config.boolean("S3_FORCE_PATH_STYLE").pipe(Config.withDefault(true))
  }
  return Option.some(settings)
})

/** What uploads accept unless `FILES_ALLOWED_TYPES` says otherwise: text, PDF, images and office documents. */
export const defaultAllowedFileTypes: ReadonlyArray<string> = [
  "text/*",
  "application/json",
  "application/pdf",
  "image/png",
  "image/jpeg",
  "image/gif",
  "image/webp",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  "application/vnd.openxmlformats-officedocument.presentationml.presentation"
]

/**
 * Single sign-on with an OpenID Connect provider (authorization code flow with PKCE), on when
 * `OIDC_ISSUER` is set with its companions.
 */
export interface OidcSettings {
  /** The issuer's URL as the provider names itself; its discovery document is `{issuer}/.well-known/openid-configuration`. */
  readonly issuer: string
  readonly clientId: string
  /** `None`: a public client (PKCE alone); `Some`: sent as HTTP Basic credentials to the token endpoint. */
  readonly clientSecret: Option.Option<Redacted.Redacted<string>>
  readonly scopes: string
  /** What a front end shows on its sign-in button. */
  readonly providerName: string
  /** This server's callback URL, exactly as registered at the provider. */
  readonly redirectUri: string
  /**
   * The front-end URLs a sign-in may return to: one with a path allows exactly that URL, one
   * without (an origin) any URL of that origin.
   */
  readonly allowedRedirects: ReadonlyArray<URL>
  /** Create an account for someone signing in for the first time, when the provider verified their email. */
  readonly autoRegister: boolean
  /**
   * Email domains (lower case) allowed to sign in; empty: any. Only an email the provider says it
   * verified counts.
   */
  readonly allowedDomains: ReadonlyArray<string>
  /**
   * Link a first sign-in to the existing account of the same email, when the provider says it
   * verified that email. Off: such a sign-in is refused (`account_exists`), since the account's
   * email may never have been verified by anyone (local registration does not verify emails).
   */
  readonly linkByEmail: boolean
  /**
   * Count every email the provider gives as verified, whether or not it says so (`email_verified`):
   * for providers that vouch for the addresses they give without sending the claim (Entra ID).
   * It counts for creating accounts, linking them and `allowedDomains` alike.
   */
  readonly trustEmail: boolean
  /** The role of accounts it creates (the first account of a server is an admin all the same). */
  readonly defaultRole: string
}

const httpUrl = (name: string) =>
  Config.nonEmptyString(name).pipe(
    Config.validate({
      message: "Expected an http:// or https:// URL",
      validation: (raw) => {
        try {
          const url = new URL(raw)
          return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" && url.password === ""
        } catch {
          return false
        }
      }
    })
  )

/** `OIDC_ALLOWED_REDIRECTS`: absolute http(s) URLs, comma-separated. */
const redirectList = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) => {
      const urls: Array<URL> = []
      for (const entry of raw.split(",").map((item) => item.trim()).filter((item) => item.length > 0)) {
        const url = URL.canParse(entry) ? new URL(entry) : undefined
        if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "") {
          return Either.left(ConfigError.InvalidData([], `Expected http:// or https:// URLs, got "${entry}"`))
        }
        urls.push(url)
      }
      return urls.length > 0
        ? Either.right(urls)
        : Either.left(ConfigError.InvalidData([], "Expected at least one URL"))
    })
  )

/** The single sign-on settings: none unless `OIDC_ISSUER` is set, and then every required companion too. */
const oidcSettings = Effect.gen(function*() {
  const required = {
    OIDC_ISSUER: yield* Config.option(httpUrl("OIDC_ISSUER")),
    OIDC_CLIENT_ID: yield* Config.option(Config.nonEmptyString("OIDC_CLIENT_ID")),
    OIDC_REDIRECT_URI: yield* Config.option(httpUrl("OIDC_REDIRECT_URI")),
    OIDC_ALLOWED_REDIRECTS: yield* Config.option(redirectList("OIDC_ALLOWED_REDIRECTS"))
  }
  const missing = Object.entries(required).filter(([, value]) => Option.isNone(value as Option.Option<unknown>))
    .map(([name]) => name)
  const clientSecret = yield* Config.option(Config.redacted(Config.nonEmptyString("OIDC_CLIENT_SECRET")))
  if (missing.length === Object.keys(required).length && Option.isNone(clientSecret)) return Option.none<OidcSettings>()
  if (missing.length > 0) {
    return yield* Effect.fail(ConfigError.InvalidData(
      [missing[0]!],
      `single sign-on needs ${Object.keys(required).join(", ")} together; missing: ${missing.join(", ")}`
    ))
  }
  const settings: OidcSettings = {
    issuer: Option.getOrThrow(required.OIDC_ISSUER),
    clientId: Option.getOrThrow(required.OIDC_CLIENT_ID),
    clientSecret,
    scopes: yield* Config.nonEmptyString("OIDC_SCOPES").pipe(
      Config.validate({
        message: "Expected space-separated scopes including openid",
        validation: (scopes) => scopes.split(/\s+/).includes("openid")
      }),
      Config.withDefault("openid email profile")
    ),
    providerName: yield* Config.nonEmptyString("OIDC_PROVIDER_NAME").pipe(Config.withDefault("Single sign-on")),
    redirectUri: Option.getOrThrow(required.OIDC_REDIRECT_URI),
    allowedRedirects: Option.getOrThrow(required.OIDC_ALLOWED_REDIRECTS),
    autoRegister: yield* Config.boolean("OIDC_AUTO_REGISTER").pipe(Config.withDefault(true)),
    allowedDomains: yield* commaList("OIDC_ALLOWED_DOMAINS").pipe(
      Config.map((domains) => domains.map((domain) => domain.replace(/^@/, "").toLowerCase())),
      Config.withDefault<ReadonlyArray<string>>([])
    ),
    linkByEmail: yield* Config.boolean("OIDC_LINK_BY_EMAIL").pipe(Config.withDefault(false)),
    trustEmail: yield* Config.boolean("OIDC_TRUST_EMAIL").pipe(Config.withDefault(false)),
    defaultRole: yield* Config.string("OIDC_DEFAULT_ROLE").pipe(
      Config.validate({
        message: "Expected a role name (lower case letters, digits, _ and -)",
        validation: (name) => /^[a-z][a-z0-9_-]{1,31}$/.test(name)
      }),
      Config.withDefault("user")
    )
  }
  return Option.some(settings)
})

export class AppConfig extends Effect.Service<AppConfig>()("AppConfig", {
  effect: Effect.gen(function*() {
    const nodeEnv = yield* Config.literal("development", "production", "test")("NODE_ENV").pipe(
      Config.withDefault("development" as const)
    )
    const port = yield* Config.integer("PORT").pipe(
      Config.validate({ message: "Expected a port number from 0 to 65535", validation: (n) => n >= 0 && n <= 65535 }),
      Config.withDefault(3000)
    )
    const host = yield* Config.nonEmptyString("HOST").pipe(Config.withDefault("127.0.0.1"))
    const dataDir = yield* Config.nonEmptyString("DATA_DIR").pipe(Config.withDefault("./data"))
    const database: DatabaseSettings = {
      url: yield* Config.option(Config.redacted(Config.nonEmptyString("DATABASE_URL"))),
      poolSize: yield* positiveInt("DATABASE_POOL_SIZE").pipe(Config.withDefault(10)),
      statementTimeout: yield* Config.duration("DATABASE_STATEMENT_TIMEOUT").pipe(
        Config.withDefault(Duration.seconds(30))
      ),
      connectTimeout: yield* Config.duration("DATABASE_CONNECT_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10))),
      migrateOnStart: yield* Config.boolean("MIGRATE_ON_START").pipe(Config.withDefault(true)),
      sqliteBusyTimeout: yield* Config.duration("SQLITE_BUSY_TIMEOUT").pipe(Config.withDefault(Duration.seconds(1)))
    }
    const minimumLogLevel = yield* logLevel("LOG_LEVEL").pipe(Config.withDefault<LogLevel.LogLevel>(LogLevel.Info))
    const logFormat = yield* Config.literal("json", "pretty")("LOG_FORMAT").pipe(
      Config.withDefault<LogFormat>(nodeEnv === "production" ? "json" : "pretty")
    )
    const maxBodySize = yield* byteSize("MAX_BODY_SIZE").pipe(Config.withDefault(1024 * 1024))
    // A whole chat history exported from another product is often tens of megabytes.
    const importMaxSize = yield* byteSize("IMPORT_MAX_SIZE").pipe(Config.withDefault(64 * 1024 * 1024))
    const compression: CompressionSettings = {
      enabled: yield* Config.boolean("COMPRESSION").pipe(Config.withDefault(true)),
      minSize: yield* byteSize("COMPRESSION_MIN_SIZE").pipe(Config.withDefault(1024))
    }
    const corsOrigins = yield* commaList("CORS_ORIGINS").pipe(Config.withDefault<ReadonlyArray<string>>([]))
    const shutdownTimeout = yield* Config.duration("SHUTDOWN_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10)))
    const trustProxy = yield* Config.boolean("TRUST_PROXY").pipe(Config.withDefault(false))
    /** `Strict-Transport-Security`'s max-age, for a server reached over HTTPS only (through its proxy). */
    const hstsMaxAge = yield* Config.option(Config.duration("HSTS_MAX_AGE"))
    // Without it, `/metrics` is open (it holds counts, never data); with it, a scraper sends it as a bearer token.
    const metricsToken = yield* Config.option(Config.redacted(Config.nonEmptyString("METRICS_TOKEN")))
    const auth: AuthSettings = {
      accessTokenTtl: yield* Config.duration("ACCESS_TOKEN_TTL").pipe(Config.withDefault(Duration.minutes(15))),
      refreshTokenTtl: yield* Config.duration("REFRESH_TOKEN_TTL").pipe(Config.withDefault(Duration.days(30))),
      passwordHashCost: yield* Config.integer("PASSWORD_HASH_COST").pipe(
        Config.validate({ message: "Expected an integer from 14 to 20", validation: (n) => n >= 14 && n <= 20 }),
        Config.withDefault(17)
      ),
      passwordHashConcurrency: yield* positiveInt("PASSWORD_HASH_CONCURRENCY").pipe(Config.withDefault(2)),
      passwordHashQueueLimit: yield* Config.integer("PASSWORD_HASH_QUEUE_LIMIT").pipe(
        Config.validate({ message: "Expected a non-negative integer", validation: (n) => n >= 0 }),
        Config.withDefault(32)
      ),
      rateLimitWindow: yield* Config.duration("AUTH_RATE_LIMIT_WINDOW").pipe(Config.withDefault(Duration.minutes(1))),
      rateLimitPerAddress: yield* positiveInt("AUTH_RATE_LIMIT_PER_ADDRESS").pipe(Config.withDefault(20)),
      rateLimitPerAccount: yield* positiveInt("AUTH_RATE_LIMIT_PER_ACCOUNT").pipe(Config.withDefault(5)),
      shareReactionsPerAddress: yield* positiveInt("SHARE_REACTIONS_PER_ADDRESS").pipe(Config.withDefault(30)),
      registration: yield* Config.literal("open", "closed")("REGISTRATION").pipe(Config.withDefault("open" as const))
    }
    const apiRateLimit: ApiRateLimitSettings = {
      window: yield* Config.duration("RATE_LIMIT_WINDOW").pipe(Config.withDefault(Duration.minutes(1))),
      perAddress: yield* Config.option(positiveInt("RATE_LIMIT_PER_ADDRESS")),
      perUser: yield* Config.option(positiveInt("RATE_LIMIT_PER_USER")),
      exemptAddresses: yield* addressRanges("RATE_LIMIT_EXEMPT_ADDRESSES").pipe(
        Config.withDefault<ReadonlyArray<AddressRange>>([])
      )
    }
    const telemetry: TelemetrySettings = {
      otlpEndpoint: yield* Config.option(
        Config.nonEmptyString("OTEL_EXPORTER_OTLP_ENDPOINT").pipe(
          Config.validate({
            message: "Expected an http:// or https:// URL",
            validation: (url) => /^https?:\/\/[^\s]+$/.test(url)
          }),
          Config.map((url) => url.replace(/\/+$/, ""))
        )
      ),
      otlpHeaders: yield* otlpHeaders("OTEL_EXPORTER_OTLP_HEADERS").pipe(
        Config.withDefault(Redacted.make<Record<string, string>>({}))
      ),
      serviceName: yield* Config.nonEmptyString("OTEL_SERVICE_NAME").pipe(Config.withDefault("webplus")),
      exportInterval: yield* positiveInt("OTEL_BSP_SCHEDULE_DELAY").pipe(
        Config.map(Duration.millis),
        Config.withDefault(Duration.seconds(5))
      )
    }
    const redis: RedisSettings = {
      url: yield* Config.option(Config.nonEmptyString("REDIS_URL").pipe(Config.map(Redacted.make))),
      keyPrefix: yield* Config.string("REDIS_KEY_PREFIX").pipe(Config.withDefault("webplus:"))
    }
    const models: ModelSettings = {
      ollamaUrl: yield* Config.option(Config.nonEmptyString("OLLAMA_URL")),
      // Tests never probe a real Ollama on the machine by surprise.
      ollamaAutodetect: yield* Config.boolean("OLLAMA_AUTODETECT").pipe(Config.withDefault(nodeEnv !== "test")),
      openAiApiKey: yield* Config.option(Config.redacted(Config.nonEmptyString("OPENAI_API_KEY"))),
      openAiBaseUrl: yield* Config.option(Config.nonEmptyString("OPENAI_BASE_URL")),
      anthropicApiKey: yield* Config.option(Config.redacted(Config.nonEmptyString("ANTHROPIC_API_KEY"))),
      anthropicBaseUrl: yield* Config.nonEmptyString("ANTHROPIC_BASE_URL").pipe(
        Config.withDefault("https://api.anthropic.com")
      ),
      statusPollInterval: yield* Config.duration("MODEL_STATUS_POLL_INTERVAL").pipe(
        Config.withDefault(Duration.seconds(15))
      ),
      resolveCacheTtl: yield* Config.duration("MODEL_CACHE_TTL").pipe(Config.withDefault(Duration.seconds(5)))
    }
    const events: EventsSettings = {
      maxSocketsPerUser: yield* positiveInt("EVENTS_MAX_SOCKETS_PER_USER").pipe(Config.withDefault(8)),
      socketBufferBytes: yield* byteSize("EVENTS_SOCKET_BUFFER_SIZE").pipe(Config.withDefault(1024 * 1024)),
      heartbeat: yield* Config.duration("EVENTS_HEARTBEAT_INTERVAL").pipe(Config.withDefault(Duration.seconds(30)))
    }
    const chatRateLimitWindow = yield* Config.duration("CHAT_RATE_LIMIT_WINDOW").pipe(
      Config.withDefault(Duration.minutes(1))
    )
    const chat: ChatSettings = {
      firstChunkTimeout: yield* Config.duration("CHAT_FIRST_CHUNK_TIMEOUT").pipe(
        Config.withDefault(Duration.seconds(120))
      ),
      idleTimeout: yield* Config.duration("CHAT_IDLE_TIMEOUT").pipe(Config.withDefault(Duration.seconds(60))),
      retryAttempts: yield* Config.integer("CHAT_RETRY_ATTEMPTS").pipe(
        Config.validate({ message: "Expected an integer from 0 to 10", validation: (n) => n >= 0 && n <= 10 }),
        Config.withDefault(3)
      ),
      retryBaseDelay: yield* Config.duration("CHAT_RETRY_BASE_DELAY").pipe(Config.withDefault(Duration.millis(500))),
      retryMaxDelay: yield* Config.duration("CHAT_RETRY_MAX_DELAY").pipe(Config.withDefault(Duration.seconds(10))),
      breakerThreshold: yield* positiveInt("PROVIDER_BREAKER_THRESHOLD").pipe(Config.withDefault(5)),
      breakerCooldown: yield* Config.duration("PROVIDER_BREAKER_COOLDOWN").pipe(
        Config.withDefault(Duration.seconds(30))
      ),
      flushInterval: yield* Config.duration("CHAT_FLUSH_INTERVAL").pipe(Config.withDefault(Duration.millis(250))),
      streamLease: yield* Config.duration("CHAT_STREAM_LEASE").pipe(Config.withDefault(Duration.seconds(30))),
      resumeRetention: yield* Config.duration("CHAT_RESUME_RETENTION").pipe(Config.withDefault(Duration.minutes(2))),
      defaultContextWindow: yield* positiveInt("CHAT_DEFAULT_CONTEXT_WINDOW").pipe(Config.withDefault(8192)),
      developmentModel: yield* Config.boolean("DEVELOPMENT_MODEL").pipe(Config.withDefault(nodeEnv !== "production")),
      rateLimit: Option.map(
        yield* Config.option(positiveInt("CHAT_RATE_LIMIT_PER_USER")),
        (perUser) => ({ perUser, window: chatRateLimitWindow })
      ),
      tokenBudget: {
        perUser: yield* Config.option(positiveInt("TOKEN_BUDGET_PER_USER")),
        period: yield* Config.literal("day", "week", "month")("TOKEN_BUDGET_PERIOD").pipe(
          Config.withDefault<BudgetPeriod>("month")
        )
      }
    }
    const jobs: JobsSettings = {
      amqpUrl: yield* Config.option(Config.nonEmptyString("AMQP_URL").pipe(Config.map(Redacted.make))),
      queuePrefix: yield* Config.string("AMQP_QUEUE_PREFIX").pipe(Config.withDefault("webplus.")),
      pollInterval: yield* Config.duration("JOBS_POLL_INTERVAL").pipe(Config.withDefault(Duration.seconds(1))),
      concurrency: yield* positiveInt("JOBS_CONCURRENCY").pipe(Config.withDefault(2)),
      maxAttempts: yield* positiveInt("JOBS_MAX_ATTEMPTS").pipe(Config.withDefault(3)),
      retryBaseDelay: yield* Config.duration("JOBS_RETRY_BASE_DELAY").pipe(Config.withDefault(Duration.seconds(2))),
      retryMaxDelay: yield* Config.duration("JOBS_RETRY_MAX_DELAY").pipe(Config.withDefault(Duration.minutes(1))),
      retention: yield* Config.duration("JOBS_RETENTION").pipe(Config.withDefault(Duration.days(7))),
      timeout: yield* Config.duration("JOBS_TIMEOUT").pipe(Config.withDefault(Duration.minutes(10)))
    }
    /** How long a trashed conversation, and a deleted message's content, are kept before being erased. */
    const trashRetention = yield* Config.duration("TRASH_RETENTION").pipe(Config.withDefault(Duration.days(30)))
    const files: FilesSettings = {
      dir: yield* Config.nonEmptyString("FILES_DIR").pipe(Config.withDefault(`${dataDir.replace(/\/+$/, "")}/files`)),
      maxSize: yield* byteSize("FILES_MAX_SIZE").pipe(Config.withDefault(25 * 1024 * 1024)),
      allowedTypes: yield* commaList("FILES_ALLOWED_TYPES").pipe(
        Config.map((types) => types.map((type) => type.toLowerCase())),
        Config.withDefault(defaultAllowedFileTypes)
      ),
      analysisMaxChars: yield* positiveInt("FILE_ANALYSIS_MAX_CHARS").pipe(Config.withDefault(100_000)),
      chatImageMaxSize: yield* byteSize("CHAT_IMAGE_MAX_SIZE").pipe(Config.withDefault(5 * 1024 * 1024)),
      quotaPerUser: yield* Config.option(byteSize("FILES_QUOTA_PER_USER")),
      s3: yield* s3Settings,
      encryption: yield* Config.literal("on", "off")("FILES_ENCRYPTION").pipe(
        Config.withDefault("on" as const),
        Config.map((value) => value === "on")
      )
    }
    const oidc = yield* oidcSettings
    const embeddings: EmbeddingSettings = {
      model: yield* Config.option(
        Config.nonEmptyString("EMBEDDING_MODEL").pipe(
          Config.map((name) => name.trim()),
          Config.validate({ message: "Expected a model's name", validation: (name) => name.length > 0 })
        )
      )
    }
    return {
      nodeEnv,
      port,
      host,
      dataDir,
      database,
      logLevel: minimumLogLevel,
      logFormat,
      maxBodySize,
      importMaxSize,
      compression,
      corsOrigins,
      shutdownTimeout,
      trustProxy,
      hstsMaxAge,
      metricsToken,
      telemetry,
      auth,
      apiRateLimit,
      redis,
      models,
      events,
      chat,
      jobs,
      files,
      trashRetention,
      oidc,
      embeddings
    }
  })
}) {}

/** Renders a `ConfigError` as one line that names the offending variable(s). */
export const formatConfigError = (error: ConfigError.ConfigError): string => {
  const leaves: Array<string> = []
  const visit = (e: ConfigError.ConfigError): void => {
    switch (e._op) {
      case "And":
      case "Or":
        visit(e.left)
        visit(e.right)
        return
      case "MissingData":
        leaves.push(`${e.path.join(".")} is required`)
        return
      case "InvalidData":
      case "SourceUnavailable":
      case "Unsupported":
        leaves.push(`${e.path.join(".")}: ${e.message}`)
        return
    }
  }
  visit(error)
  return `Invalid configuration: ${Array.from(new Set(leaves)).join("; ")}`
}
