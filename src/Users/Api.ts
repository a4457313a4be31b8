/** Administration of users, and each user's own personal data (export, erasure, consent). */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { ApiKeyView, Authentication, Password, UserView } from "../Auth/Api.js"
import { ConversationExport } from "../Conversations/Api.js"
import { Permission } from "../Domain/Actor.js"
import { AuditEvent } from "../Domain/Credentials.js"
import { Conflict, Forbidden, NotFound, RateLimited, ServiceUnavailable } from "../Domain/Errors.js"
import { JsonObject } from "../Domain/Fields.js"
import { ConversationId, LlmModelId, UserId } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"
import { Email, RoleName, Username } from "../Domain/User.js"

const UserPath = request(Schema.Struct({ id: UserId }))
const RolePath = request(Schema.Struct({ name: RoleName }))

export class RoleView extends Schema.Class<RoleView>("RoleView")({
  name: RoleName,
  description: Schema.String,
  permissions: Schema.Array(Permission),
  models: Schema.NullOr(Schema.Array(LlmModelId)).annotations({
    description: "The only models holders may see and use; null: every model"
  }),
  tokenBudget: Schema.NullOr(Schema.Int).annotations({
    description: "Tokens each holder may spend per `TOKEN_BUDGET_PERIOD`; null: the server's `TOKEN_BUDGET_PER_USER`"
  }),
  builtin: Schema.Boolean.annotations({ description: "`admin` and `user`: they cannot be changed or deleted" }),
  userCount: Schema.Int.annotations({ description: "How many accounts hold it" })
}) {}

const Permissions = Schema.Array(Permission).pipe(Schema.maxItems(64)).annotations({
  description: "What holders may do; an API key of theirs is limited further by its scopes"
})

const RoleDescription = Schema.String.pipe(Schema.maxLength(500))

const RoleModels = Schema.NullOr(Schema.Array(LlmModelId).pipe(Schema.maxItems(100))).annotations({
  description: "Limit holders to these models (ids from `GET /api/v1/models`, at most 100); every other model " +
    "is unknown to them, in the model lists, in chat and at the gateway; null: every model"
})

const RoleTokenBudget = Schema.NullOr(Schema.Int.pipe(Schema.between(1, 1_000_000_000_000))).annotations({
  description: "Tokens each holder may spend per `TOKEN_BUDGET_PERIOD` (chat and gateway together), instead of " +
    "`TOKEN_BUDGET_PER_USER`; null: the server's"
})

export class CreateRolePayload extends Schema.Class<CreateRolePayload>("CreateRolePayload")({
  name: RoleName,
  description: Schema.optionalWith(RoleDescription, { default: () => "" }),
  permissions: Permissions,
  models: Schema.optionalWith(RoleModels, { default: () => null }),
  tokenBudget: Schema.optionalWith(RoleTokenBudget, { default: () => null })
}) {}

export class UpdateRolePayload extends Schema.Class<UpdateRolePayload>("UpdateRolePayload")({
  description: Schema.optional(RoleDescription),
  permissions: Schema.optional(Permissions),
  models: Schema.optional(RoleModels),
  tokenBudget: Schema.optional(RoleTokenBudget)
}) {}

export class SetRolePayload extends Schema.Class<SetRolePayload>("SetRolePayload")({ role: RoleName }) {}

export class CreateUserPayload extends Schema.Class<CreateUserPayload>("CreateUserPayload")({
  email: Email,
  username: Username,
  password: Password,
  role: Schema.optionalWith(RoleName, { default: () => RoleName.make("user") })
}) {}

export class ResetPasswordPayload extends Schema.Class<ResetPasswordPayload>("ResetPasswordPayload")({
  password: Password
}) {}

/** A password asked again, to confirm a change to the account. */
const CurrentPassword = Schema.Redacted(Schema.String.pipe(Schema.maxLength(1024)))

export class UpdateAccountPayload extends Schema.Class<UpdateAccountPayload>("UpdateAccountPayload")({
  email: Schema.optional(Email),
  username: Schema.optional(Username),
  password: CurrentPassword.annotations({ description: "Your current password" })
}) {}

/** An audit event as the API shows it: the row model's JSON variant. */
export const AuditEventView = AuditEvent.json.annotations({ identifier: "AuditEvent" })

export const AuditQuery = request(Schema.Struct({
  ...PageParams.fields,
  actorId: Schema.optional(Schema.String.pipe(Schema.maxLength(100))),
  action: Schema.optional(Schema.String.pipe(Schema.maxLength(100))),
  targetType: Schema.optional(Schema.String.pipe(Schema.maxLength(100))),
  targetId: Schema.optional(Schema.String.pipe(Schema.maxLength(100))),
  from: Schema.optional(Schema.DateTimeUtc),
  to: Schema.optional(Schema.DateTimeUtc)
}))

export class AdminApi extends HttpApiGroup.make("admin")
  .add(
    HttpApiEndpoint.get("listUsers", "/api/v1/admin/users")
      .setUrlParams(PageParams)
      .addSuccess(Page(UserView))
  )
  .add(
    HttpApiEndpoint.post("createUser", "/api/v1/admin/users")
      .setPayload(request(CreateUserPayload))
      .addSuccess(UserView, { status: 201 })
      .addError(Conflict)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Create an account (its role `user` unless named)")
  )
  .add(
    HttpApiEndpoint.del("deleteUser", "/api/v1/admin/users/:id")
      .setPath(UserPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Erase a user and everything in it (not yourself, not the last admin)")
  )
  .add(
    HttpApiEndpoint.post("resetPassword", "/api/v1/admin/users/:id/password")
      .setPath(UserPath)
      .setPayload(request(ResetPasswordPayload))
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Set a user's password; their sessions end")
  )
  .add(
    HttpApiEndpoint.put("setRole", "/api/v1/admin/users/:id/role")
      .setPath(UserPath)
      .setPayload(request(SetRolePayload))
      .addSuccess(UserView)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Change a user's role (the last admin cannot be demoted)")
  )
  .add(
    HttpApiEndpoint.post("disableUser", "/api/v1/admin/users/:id/disable")
      .setPath(UserPath)
      .addSuccess(UserView)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Disable a user: their tokens and keys stop working at once")
  )
  .add(
    HttpApiEndpoint.post("enableUser", "/api/v1/admin/users/:id/enable")
      .setPath(UserPath)
      .addSuccess(UserView)
      .addError(NotFound)
      .addError(Conflict)
  )
  .add(
    HttpApiEndpoint.get("listRoles", "/api/v1/admin/roles")
      .addSuccess(Schema.Array(RoleView))
      .annotate(OpenApi.Summary, "The roles, with their permissions and how many accounts hold each")
  )
  .add(
    HttpApiEndpoint.post("createRole", "/api/v1/admin/roles")
      .setPayload(request(CreateRolePayload))
      .addSuccess(RoleView, { status: 201 })
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Create a role (a named set of permissions) to give users")
  )
  .add(
    HttpApiEndpoint.patch("updateRole", "/api/v1/admin/roles/:name")
      .setPath(RolePath)
      .setPayload(request(UpdateRolePayload))
      .addSuccess(RoleView)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Change a role's description or permissions (not a built-in one's)")
  )
  .add(
    HttpApiEndpoint.del("deleteRole", "/api/v1/admin/roles/:name")
      .setPath(RolePath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Delete a role no account holds (not a built-in one)")
  )
  .add(
    HttpApiEndpoint.get("listAuditEvents", "/api/v1/admin/audit-events")
      .setUrlParams(AuditQuery)
      .addSuccess(Page(AuditEventView))
      .annotate(OpenApi.Summary, "The audit trail, newest first, filtered")
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "User administration and the audit trail (admins)")
{}

export class Consent extends Schema.Class<Consent>("Consent")({
  termsAcceptedAt: Schema.DateTimeUtc,
  marketingConsent: Schema.Boolean,
  marketingConsentAt: Schema.NullOr(Schema.DateTimeUtc)
}) {}

export class UpdateConsentPayload extends Schema.Class<UpdateConsentPayload>("UpdateConsentPayload")({
  marketingConsent: Schema.Boolean
}) {}

export class DeleteAccountPayload extends Schema.Class<DeleteAccountPayload>("DeleteAccountPayload")({
  password: CurrentPassword
}) {}

/** Each conversation as its importable document (see the conversation export), with its id. */
export const PersonalConversation = Schema.Struct({
  id: ConversationId,
  deletedAt: Schema.NullOr(Schema.DateTimeUtc),
  ...ConversationExport.fields
}).annotations({ identifier: "PersonalConversation" })

/** A stored record as it is kept. */
const ExportedRecord = JsonObject.annotations({
  identifier: "ExportedRecord"
})

export class PersonalDataExport extends Schema.Class<PersonalDataExport>("PersonalDataExport")({
  exportedAt: Schema.DateTimeUtc,
  user: UserView,
  consent: Consent,
  sessions: Schema.Array(Schema.Struct({
    createdAt: Schema.DateTimeUtc,
    lastUsedAt: Schema.NullOr(Schema.DateTimeUtc),
    expiresAt: Schema.DateTimeUtc,
    revokedAt: Schema.NullOr(Schema.DateTimeUtc),
    ipAddress: Schema.NullOr(Schema.String),
    userAgent: Schema.NullOr(Schema.String)
  })),
  identities: Schema.Array(Schema.Struct({
    issuer: Schema.String,
    subject: Schema.String,
    email: Schema.NullOr(Schema.String),
    createdAt: Schema.DateTimeUtc,
    lastLoginAt: Schema.NullOr(Schema.DateTimeUtc)
  })).annotations({
    description: "Who you are at the identity providers you sign in with (single sign-on): the provider (`issuer`), " +
      "the id it gives you (`subject`), the email it last gave, and when you first and last signed in with it"
  }),
  apiKeys: Schema.Array(ApiKeyView),
  conversations: Schema.Array(PersonalConversation),
  files: Schema.Array(ExportedRecord),
  fileAnalyses: Schema.Array(ExportedRecord).annotations({
    description: "Analyses of your files: what the model found and the text it read"
  }),
  graph: Schema.Struct({
    entities: Schema.Array(ExportedRecord),
    relationships: Schema.Array(ExportedRecord),
    extractions: Schema.Array(ExportedRecord)
  }).annotations({ description: "Your knowledge graph, and the extractions that built it" }),
  shares: Schema.Array(ExportedRecord).annotations({ description: "What you published, as published" }),
  modelConfigs: Schema.Array(ExportedRecord),
  usage: Schema.Array(ExportedRecord).annotations({ description: "Tokens spent per answer (chat and gateway)" }),
  feedback: Schema.Array(ExportedRecord).annotations({ description: "Your ratings of answers" }),
  auditEvents: Schema.Array(AuditEventView)
}) {}

export class MeApi extends HttpApiGroup.make("me")
  .add(
    HttpApiEndpoint.get("export", "/api/v1/me/export")
      .addSuccess(PersonalDataExport)
      .annotate(OpenApi.Summary, "Everything stored about you, as JSON")
  )
  .add(
    HttpApiEndpoint.patch("updateAccount", "/api/v1/me")
      .setPayload(request(UpdateAccountPayload))
      .addSuccess(UserView)
      .addError(Conflict)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Change your email address or username (the password is asked again)")
  )
  .add(
    HttpApiEndpoint.del("deleteAccount", "/api/v1/me")
      .setPayload(request(DeleteAccountPayload))
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Conflict)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Erase your account and everything in it (the password is asked again)")
  )
  .add(HttpApiEndpoint.get("getConsent", "/api/v1/me/consent").addSuccess(Consent))
  .add(
    HttpApiEndpoint.put("updateConsent", "/api/v1/me/consent")
      .setPayload(request(UpdateConsentPayload))
      .addSuccess(Consent)
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Your personal data")
{}
