import { Model } from "@effect/sql"
import { Schema } from "effect"
import { NonNegativeInt, OptionalDateTime, StringListColumn } from "./Fields.js"
import { IdInsert, LlmModelId, RoleId, UserId } from "./Ids.js"

export const RoleName = Schema.String.pipe(Schema.pattern(/^[a-z][a-z0-9_-]{1,31}$/), Schema.brand("RoleName"))
export type RoleName = typeof RoleName.Type

/** The roles the initial migration seeds; operators may add more. */
export const BuiltinRoles = { admin: RoleName.make("admin"), user: RoleName.make("user") } as const

/** A named set of permissions such as `conversations:write` or `admin:users`. */
export class Role extends Model.Class<Role>("Role")({
  id: IdInsert(RoleId),
  name: RoleName,
  description: Schema.String,
  permissions: StringListColumn,
  /** The only models holders may see and use, by id; null: every model. */
  models: Model.JsonFromString(Schema.NullOr(Schema.Array(LlmModelId))),
  /** Tokens each holder may spend per budget period; null: the server's `TOKEN_BUDGET_PER_USER`. */
  tokenBudget: Schema.NullOr(Schema.Int),
  builtin: Model.BooleanFromNumber,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

/** An email address, normalised: surrounding spaces dropped, lower case. */
export const Email = Schema.compose(Schema.Trim, Schema.Lowercase).pipe(
  Schema.maxLength(254),
  Schema.pattern(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, { message: () => "Expected an email address" }),
  Schema.brand("Email")
)
export type Email = typeof Email.Type

export const Username = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9_.-]{3,32}$/, {
    message: () => "Expected 3 to 32 letters, digits, dots, dashes or underscores"
  }),
  Schema.brand("Username")
)
export type Username = typeof Username.Type

export class User extends Model.Class<User>("User")({
  id: IdInsert(UserId),
  email: Email,
  username: Username,
  passwordHash: Model.Sensitive(Schema.NullOr(Schema.String)),
  roleId: RoleId,
  disabled: Model.BooleanFromNumber,
  termsAcceptedAt: Schema.DateTimeUtc,
  marketingConsent: Model.BooleanFromNumber,
  marketingConsentAt: OptionalDateTime,
  lastLoginAt: OptionalDateTime,
  failedLoginCount: NonNegativeInt,
  deletedAt: OptionalDateTime,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}
