/**
 * Who is making the request: a user signed in with a session (access token),
 * or a user's API key limited to its scopes. Provided to every protected
 * endpoint by the `Authentication` middleware; services read it to apply
 * their policies.
 */
import { Context, Schema } from "effect"
import { ApiKeyId, LlmModelId, SessionFamilyId, UserId } from "./Ids.js"
import { RoleName } from "./User.js"

export const Permission = Schema.Literal(
  "models:read",
  "models:use",
  "conversations:read",
  "conversations:write",
  "files:read",
  "files:write",
  "chat",
  "keys:manage",
  "admin:users",
  "admin:roles",
  "admin:audit",
  "admin:providers",
  "admin:models",
  "admin:model-configs",
  "ratelimit:exempt"
)
export type Permission = typeof Permission.Type

export const isPermission = Schema.is(Permission)

export class Actor extends Schema.Class<Actor>("Actor")({
  userId: UserId,
  role: RoleName,
  /** What this actor may do: the role's permissions, narrowed to the key's scopes for an API key. */
  permissions: Schema.Array(Permission),
  via: Schema.Literal("session", "api_key"),
  sessionFamilyId: Schema.optional(SessionFamilyId),
  apiKeyId: Schema.optional(ApiKeyId),
  /** For an API key with a limit of its own: the answers it may ask models for per minute. */
  keyRateLimitPerMinute: Schema.optional(Schema.Int),
  /** For a credential limited to some models (its key's list, its role's): their ids. */
  models: Schema.optional(Schema.Array(LlmModelId)),
  /** When the user's role has a token budget of its own: the tokens per budget period. */
  tokenBudget: Schema.optional(Schema.Int),
  /** For an API key with a token budget of its own: the tokens it may spend per budget period. */
  keyTokenBudget: Schema.optional(Schema.Int)
}) {
  can(permission: Permission): boolean {
    return this.permissions.includes(permission)
  }

  /** Whether this actor's credential allows the model (an API key may be limited to some). */
  mayUse(model: LlmModelId): boolean {
    return this.models === undefined || this.models.includes(model)
  }
}

export class CurrentActor extends Context.Tag("CurrentActor")<CurrentActor, Actor>() {}
