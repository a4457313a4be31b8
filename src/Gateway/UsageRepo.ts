/**
 * Token usage as providers report it, one row per answer, whoever asked for
 * it: the gateway records its completions (`source: "gateway"`), the chat
 * engine its answers (`source: "chat"`), the knowledge graph its embeddings
 * (`source: "graph"`), and the background jobs the answers they needed
 * (`title`, `analysis`, `extraction`). Totals are read per API key, and for
 * reports per model, day, source or user, summed by the database; budgets
 * count every row.
 */
import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { CountColumn } from "../Domain/Fields.js"
import { ApiKeyId, IdInsert, LlmModelId, UserId, UuidV7 } from "../Domain/Ids.js"
import { Username } from "../Domain/User.js"
import { UsageSource } from "./Schemas.js"

export const UsageRecordId = UuidV7.pipe(Schema.brand("UsageRecordId"))
export type UsageRecordId = typeof UsageRecordId.Type

const TokenCount = Schema.Int.pipe(Schema.nonNegative())

export class UsageRecord extends Model.Class<UsageRecord>("UsageRecord")({
  id: IdInsert(UsageRecordId),
  userId: UserId,
  apiKeyId: Schema.NullOr(ApiKeyId),
  modelId: Schema.NullOr(LlmModelId),
  /** What the model was called when it was used: kept when the model is deleted. */
  modelName: Schema.NullOr(Schema.String),
  source: UsageSource,
  promptTokens: TokenCount,
  completionTokens: TokenCount,
  createdAt: Model.DateTimeInsert
}) {}

/** One answer's usage, as the chat engine, the gateway, the knowledge graph or a background job reports it. */
/** Whom model work was done for: the user, and the API key they asked with (null: a session, or not known). */
export interface Spender {
  readonly userId: UserId
  readonly apiKeyId: ApiKeyId | null
}

export interface UsageInput {
  readonly userId: UserId
  /** The API key the request came with; null for a signed-in session. */
  readonly apiKeyId: ApiKeyId | null
  readonly modelId: LlmModelId | null
  /** The model's name at the time (the provider's name for it), so the row stays readable after the model goes. */
  readonly modelName?: string | null | undefined
  readonly source: UsageSource
  readonly promptTokens: number
  readonly completionTokens: number
}

/** The sums of one group of rows. */
export const UsageTotalsRow = Schema.Struct({
  source: UsageSource,
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  requests: Schema.Number,
  promptTokens: Schema.Number,
  completionTokens: Schema.Number
})
export type UsageTotalsRow = typeof UsageTotalsRow.Type

/** Which rows a report sums: one user's or everyone's, recorded from `from` on and before `to`. */
export const UsageFilter = Schema.Struct({
  userId: Schema.optional(UserId),
  from: Schema.optional(Schema.DateTimeUtc),
  to: Schema.optional(Schema.DateTimeUtc)
})
export type UsageFilter = typeof UsageFilter.Type

const sums = { requests: CountColumn, promptTokens: CountColumn, completionTokens: CountColumn }

export const ModelSumsRow = Schema.Struct({
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  ...sums
})
export const DaySumsRow = Schema.Struct({ day: Schema.String, ...sums })
export const SourceSumsRow = Schema.Struct({ source: UsageSource, ...sums })
export const UserSumsRow = Schema.Struct({ userId: UserId, username: Username, ...sums })
export type ModelSumsRow = typeof ModelSumsRow.Type
export type DaySumsRow = typeof DaySumsRow.Type
export type SourceSumsRow = typeof SourceSumsRow.Type
export type UserSumsRow = typeof UserSumsRow.Type

export class UsageRepo extends Effect.Service<UsageRepo>()("Gateway/UsageRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(UsageRecord, {
      tableName: "usage_records",
      spanPrefix: "UsageRepo",
      idColumn: "id"
    })

    const totalsForKey = SqlSchema.findAll({
      Request: Schema.Struct({ apiKeyId: ApiKeyId, userId: UserId }),
      Result: UsageTotalsRow,
      // The user condition is redundant for a key of theirs; it keeps the query from answering for anyone else's.
      execute: ({ apiKeyId, userId }) =>
        sql`SELECT source, model_id, model_name, count(*) AS requests,
                   sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
            FROM usage_records
            WHERE api_key_id = ${apiKeyId} AND user_id = ${userId}
            GROUP BY source, model_id, model_name
            ORDER BY source, model_name, model_id`
    })

    // --- reports: one query each, grouped and summed by the database

    /** The rows a filter selects (its times as stored: ISO text, which PostgreSQL reads as timestamptz). */
    const selected = (filter: typeof UsageFilter.Encoded) =>
      sql.and([
        filter.userId === undefined ? undefined : sql`usage_records.user_id = ${filter.userId}`,
        filter.from === undefined ? undefined : sql`usage_records.created_at >= ${filter.from}`,
        filter.to === undefined ? undefined : sql`usage_records.created_at < ${filter.to}`
      ].filter((condition) => condition !== undefined))

    const summed = sql`count(*) AS requests, sum(usage_records.prompt_tokens) AS prompt_tokens,
                       sum(usage_records.completion_tokens) AS completion_tokens`
    const mostTokens = sql`sum(usage_records.prompt_tokens) + sum(usage_records.completion_tokens) DESC`

    /** The UTC calendar day of a row, `YYYY-MM-DD`: SQLite keeps ISO text in UTC, PostgreSQL a timestamptz. */
    const day = sql.onDialectOrElse({
      pg: () => sql`to_char(usage_records.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
      orElse: () => sql`strftime('%Y-%m-%d', usage_records.created_at)`
    })

    const sumsByModel = SqlSchema.findAll({
      Request: UsageFilter,
      Result: ModelSumsRow,
      // A deleted model's rows keep its name: they are grouped under it. Unnamed ones sort last on both dialects.
      execute: (filter) =>
        sql`SELECT model_id, model_name, ${summed}
            FROM usage_records WHERE ${selected(filter)}
            GROUP BY model_id, model_name
            ORDER BY ${mostTokens}, model_name IS NULL, model_name, model_id IS NULL, model_id`
    })

    const sumsByDay = SqlSchema.findAll({
      Request: UsageFilter,
      Result: DaySumsRow,
      execute: (filter) =>
        sql`SELECT ${day} AS day, ${summed}
            FROM usage_records WHERE ${selected(filter)}
            GROUP BY ${day}
            ORDER BY ${day}`
    })

    const sumsBySource = SqlSchema.findAll({
      Request: UsageFilter,
      Result: SourceSumsRow,
      execute: (filter) =>
        sql`SELECT source, ${summed}
            FROM usage_records WHERE ${selected(filter)}
            GROUP BY source
            ORDER BY ${mostTokens}, source`
    })

    // An erased user's rows went with them, so every row has its user.
    const sumsByUser = SqlSchema.findAll({
      Request: UsageFilter,
      Result: UserSumsRow,
      execute: (filter) =>
        sql`SELECT usage_records.user_id, users.username, ${summed}
            FROM usage_records JOIN users ON users.id = usage_records.user_id
            WHERE ${selected(filter)}
            GROUP BY usage_records.user_id, users.username
            ORDER BY ${mostTokens}, users.username, usage_records.user_id`
    })

    const record = (input: UsageInput): Effect.Effect<void> =>
      repo.insert(UsageRecord.insert.make({
        userId: input.userId,
        apiKeyId: input.apiKeyId,
        modelId: input.modelId,
        modelName: input.modelName ?? null,
        source: input.source,
        promptTokens: input.promptTokens,
        completionTokens: input.completionTokens
      }, { disableValidation: true })).pipe(Effect.asVoid, Effect.orDie, Effect.withSpan("UsageRepo.record"))

    /**
     * Records the usage of model work already done (a gateway answer, a background job, an
     * embedding): the work stands whatever happens to its row, so a row that cannot be written is
     * logged, never turned into a failure of the work.
     */
    const recordSpent = (input: UsageInput): Effect.Effect<void> =>
      record(input).pipe(
        Effect.catchAllCause((cause) =>
          Effect.logWarning("Could not record token usage", cause).pipe(Effect.annotateLogs({ source: input.source }))
        )
      )

    /**
     * The tokens (prompt and completion) a user, or an API key, spent from `since` on: a sum over the
     * user's (the key's) index range.
     */
    const tokensSince = (spender: { readonly userId: UserId } | { readonly apiKeyId: ApiKeyId }, since: string) =>
      Effect.map(
        sql<{ readonly tokens: number | string | null }>`
          SELECT sum(prompt_tokens + completion_tokens) AS tokens FROM usage_records
          WHERE ${"userId" in spender ? sql`user_id = ${spender.userId}` : sql`api_key_id = ${spender.apiKeyId}`}
            AND created_at >= ${since}`,
        (rows) => Number(rows[0]?.tokens ?? 0)
      ).pipe(Effect.orDie, Effect.withSpan("UsageRepo.tokensSince"))

    return {
      record,
      recordSpent,
      tokensSince,
      /** Sums per source and model of the rows of `apiKeyId`, a key of `userId`. */
      totalsForKey: (apiKeyId: ApiKeyId, userId: UserId): Effect.Effect<ReadonlyArray<UsageTotalsRow>> =>
        Effect.orDie(totalsForKey({ apiKeyId, userId })),
      /** Sums per model of the rows `filter` selects, most tokens first. */
      sumsByModel: (filter: UsageFilter): Effect.Effect<ReadonlyArray<ModelSumsRow>> =>
        Effect.orDie(sumsByModel(filter)),
      /** Sums per UTC day, oldest first. */
      sumsByDay: (filter: UsageFilter): Effect.Effect<ReadonlyArray<DaySumsRow>> => Effect.orDie(sumsByDay(filter)),
      /** Sums per source, most tokens first. */
      sumsBySource: (filter: UsageFilter): Effect.Effect<ReadonlyArray<SourceSumsRow>> =>
        Effect.orDie(sumsBySource(filter)),
      /** Sums per user, most tokens first. */
      sumsByUser: (filter: UsageFilter): Effect.Effect<ReadonlyArray<UserSumsRow>> => Effect.orDie(sumsByUser(filter))
    } as const
  })
}) {}
