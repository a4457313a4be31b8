/**
 * Every entity id is a UUIDv7 (time-ordered, so primary-key indexes stay
 * append-mostly), branded per entity so ids of different kinds never mix.
 */
import { VariantSchema } from "@effect/experimental"
import { Model } from "@effect/sql"
import { Clock, Effect, Option, Schema } from "effect"
import { v7 } from "uuid"

const lastGenerated = { msecs: -Infinity, seq: 0 }

/**
 * A fresh UUIDv7 whose time part comes from the Effect clock (so tests can control it).
 * Ids made by one process in the same millisecond still increase (a counter follows the
 * time part), so rows created together sort in creation order.
 */
export const generateUuid: Effect.Effect<string> = Effect.map(Clock.currentTimeMillis, (now) => {
  if (now > lastGenerated.msecs) {
    lastGenerated.msecs = now
    // A random start in the lower half leaves room to count up within the millisecond.
    lastGenerated.seq = Math.floor(Math.random() * 0x40000000)
  } else {
    lastGenerated.seq = (lastGenerated.seq + 1) | 0
    if (lastGenerated.seq === 0) lastGenerated.msecs++
  }
  return v7({ msecs: lastGenerated.msecs, seq: lastGenerated.seq })
})

const uuidV7Pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

export const UuidV7 = Schema.String.pipe(
  Schema.pattern(uuidV7Pattern, { message: () => "Expected a UUIDv7" }),
  Schema.annotations({ format: "uuid", examples: ["0192f0c1-7d3a-7b1e-9c4e-3f2a1b0c9d8e"] })
)

/**
 * A model field for a primary key: generated on insert unless given,
 * read back as the branded id.
 */
export const IdInsert = <B extends string>(schema: Schema.brand<typeof UuidV7, B>) =>
  Model.Field({
    select: schema,
    insert: VariantSchema.Overrideable(Schema.String, schema, {
      generate: Option.match({
        onNone: () => generateUuid,
        onSome: (id) => Effect.succeed(id as string)
      })
    }),
    update: schema,
    json: schema
  })

export const UserId = UuidV7.pipe(Schema.brand("UserId"))
export type UserId = typeof UserId.Type
export const RoleId = UuidV7.pipe(Schema.brand("RoleId"))
export type RoleId = typeof RoleId.Type
export const SessionId = UuidV7.pipe(Schema.brand("SessionId"))
export type SessionId = typeof SessionId.Type
export const SessionFamilyId = UuidV7.pipe(Schema.brand("SessionFamilyId"))
export type SessionFamilyId = typeof SessionFamilyId.Type
export const ApiKeyId = UuidV7.pipe(Schema.brand("ApiKeyId"))
export type ApiKeyId = typeof ApiKeyId.Type
export const AuditEventId = UuidV7.pipe(Schema.brand("AuditEventId"))
export type AuditEventId = typeof AuditEventId.Type
export const ProviderId = UuidV7.pipe(Schema.brand("ProviderId"))
export type ProviderId = typeof ProviderId.Type
export const LlmModelId = UuidV7.pipe(Schema.brand("LlmModelId"))
export type LlmModelId = typeof LlmModelId.Type
export const ModelConfigId = UuidV7.pipe(Schema.brand("ModelConfigId"))
export type ModelConfigId = typeof ModelConfigId.Type
export const ConversationId = UuidV7.pipe(Schema.brand("ConversationId"))
export type ConversationId = typeof ConversationId.Type
export const MessageId = UuidV7.pipe(Schema.brand("MessageId"))
export type MessageId = typeof MessageId.Type
export const ThreadId = UuidV7.pipe(Schema.brand("ThreadId"))
export type ThreadId = typeof ThreadId.Type
export const FileId = UuidV7.pipe(Schema.brand("FileId"))
export type FileId = typeof FileId.Type
export const FileAnalysisId = UuidV7.pipe(Schema.brand("FileAnalysisId"))
export type FileAnalysisId = typeof FileAnalysisId.Type
