/** Refresh-token sessions, API keys and the audit trail: how actors prove who they are, and what they did. */
import { Model } from "@effect/sql"
import { Schema } from "effect"
import { JsonObjectColumn, OptionalDateTime, StringListColumn } from "./Fields.js"
import { ApiKeyId, AuditEventId, IdInsert, LlmModelId, SessionFamilyId, SessionId, UserId } from "./Ids.js"

/**
 * One refresh token. Rotation creates the next session of the same family;
 * presenting a rotated one revokes the whole family.
 */
export class Session extends Model.Class<Session>("Session")({
  id: IdInsert(SessionId),
  userId: UserId,
  familyId: SessionFamilyId,
  tokenHash: Model.Sensitive(Schema.String),
  expiresAt: Schema.DateTimeUtc,
  rotatedAt: OptionalDateTime,
  revokedAt: OptionalDateTime,
  revokedReason: Model.FieldOption(Schema.String),
  ipAddress: Model.FieldOption(Schema.String),
  userAgent: Model.FieldOption(Schema.String),
  createdAt: Model.DateTimeInsert,
  lastUsedAt: OptionalDateTime
}) {}

/** An API key: the `wp_…` secret is shown once; only its hash and visible prefix are kept. */
export class ApiKey extends Model.Class<ApiKey>("ApiKey")({
  id: IdInsert(ApiKeyId),
  userId: UserId,
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)),
  prefix: Schema.String,
  keyHash: Model.Sensitive(Schema.String),
  scopes: StringListColumn,
  expiresAt: OptionalDateTime,
  lastUsedAt: OptionalDateTime,
  revokedAt: OptionalDateTime,
  /** Answers the key may ask models for per minute, besides its owner's limit; null: no limit of its own. */
  rateLimitPerMinute: Schema.NullOr(Schema.Int),
  /** The models the key may use, by id; null: every model its owner may use. */
  models: Model.JsonFromString(Schema.NullOr(Schema.Array(LlmModelId))),
  /** Tokens the key may spend per budget period, besides its owner's budget; null: none of its own. */
  tokenBudget: Schema.NullOr(Schema.Int),
  createdAt: Model.DateTimeInsert
}) {}

export const ActorType = Schema.Literal("user", "api_key", "system", "anonymous")
export type ActorType = typeof ActorType.Type

/**
 * Who did what to which object, when, from where. The actor id is kept without
 * a foreign key so the trail survives (pseudonymously) the erasure of a user.
 */
export class AuditEvent extends Model.Class<AuditEvent>("AuditEvent")({
  id: IdInsert(AuditEventId),
  actorType: ActorType,
  actorId: Schema.NullOr(Schema.String),
  action: Schema.String,
  targetType: Schema.NullOr(Schema.String),
  targetId: Schema.NullOr(Schema.String),
  ipAddress: Schema.NullOr(Schema.String),
  userAgent: Schema.NullOr(Schema.String),
  metadata: JsonObjectColumn,
  createdAt: Model.DateTimeInsert
}) {}
