/**
 * Token usage as providers report it, one row per answer, whoever asked for
 * it: the gateway records its completions (`source: "gateway"`), the chat
 * engine its answers (`source: "chat"`). Totals are read per API key.
 */
import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { ApiKeyId, IdInsert, LlmModelId, UserId, UuidV7 } from "../Domain/Ids.js"
import { UsageSource } from "./Schemas.js"

export const UsageRecordId = UuidV7.pipe(Schema.brand("UsageRecordId"))
export type UsageRecordId = typeof UsageRecordId.Type

/** Where the tokens were spent: the OpenAI-compatible gateway, or a conversation's chat. */

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

/** One answer's usage, as the chat engine or the gateway reports it. */
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

    /** The tokens (prompt and completion) `userId` spent from `since` on: a sum over the user's index range. */
    const tokensSince = (userId: UserId, since: string) =>
      Effect.map(
        sql<{ readonly tokens: number | string | null }>`
          SELECT sum(prompt_tokens + completion_tokens) AS tokens FROM usage_records
          WHERE user_id = ${userId} AND created_at >= ${since}`,
        (rows) => Number(rows[0]?.tokens ?? 0)
      ).pipe(Effect.orDie, Effect.withSpan("UsageRepo.tokensSince"))

    return {
      record,
      tokensSince,
      /** Sums per source and model of the rows of `apiKeyId`, a key of `userId`. */
      totalsForKey: (apiKeyId: ApiKeyId, userId: UserId): Effect.Effect<ReadonlyArray<UsageTotalsRow>> =>
        Effect.orDie(totalsForKey({ apiKeyId, userId }))
    } as const
  })
}) {}
