/**
 * The front door: registration, sessions (login, refresh, logout), the
 * current user, password changes and API keys.
 */
import {
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi
} from "@effect/platform"
import { Schema } from "effect"
import { CurrentActor, Permission } from "../Domain/Actor.js"
import { Conflict, Forbidden, NotFound, RateLimited, ServiceUnavailable, Unauthorized } from "../Domain/Errors.js"
import { ApiKeyId, LlmModelId, UserId } from "../Domain/Ids.js"
import { request } from "../Domain/Request.js"
import { Email, RoleName, Username } from "../Domain/User.js"

/**
 * Every protected endpoint: an access token (`Authorization: Bearer <jwt>`)
 * or an API key (`Authorization: Bearer wp_…` or `X-API-Key: wp_…`); and,
 * with `RATE_LIMIT_PER_USER`, the caller's requests counted (429 past it).
 */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("Auth/Authentication", {
  failure: Schema.Union(Unauthorized, RateLimited),
  provides: CurrentActor,
  security: {
    bearer: HttpApiSecurity.bearer,
    apiKey: HttpApiSecurity.apiKey({ key: "X-API-Key", in: "header" })
  }
}) {}

export const Password = Schema.Redacted(
  Schema.String.pipe(
    Schema.minLength(8, { message: () => "Passwords have at least 8 characters" }),
    Schema.maxLength(128, { message: () => "Passwords have at most 128 characters" })
  )
).annotations({ description: "8 to 128 characters; any characters, no composition rules" })

export class UserView extends Schema.Class<UserView>("UserView")({
  id: UserId,
  email: Schema.String,
  username: Schema.String,
  role: RoleName,
  disabled: Schema.Boolean,
  termsAcceptedAt: Schema.DateTimeUtc,
  marketingConsent: Schema.Boolean,
  lastLoginAt: Schema.NullOr(Schema.DateTimeUtc),
  createdAt: Schema.DateTimeUtc
}) {}

export class RegisterPayload extends Schema.Class<RegisterPayload>("RegisterPayload")({
  email: Email,
  username: Username,
  password: Password,
  acceptTerms: Schema.Literal(true).annotations({
    message: () => "The terms must be accepted",
    description: "Must be true: the terms of use are accepted"
  }),
  marketingConsent: Schema.optionalWith(Schema.Boolean, { default: () => false })
}) {}

export class LoginPayload extends Schema.Class<LoginPayload>("LoginPayload")({
  login: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(254)).annotations({
    description: "The account's email address or username"
  }),
  password: Schema.Redacted(Schema.String.pipe(Schema.maxLength(1024)))
}) {}

export class RefreshPayload extends Schema.Class<RefreshPayload>("RefreshPayload")({
  refreshToken: Schema.Redacted(Schema.String.pipe(Schema.maxLength(200)))
}) {}

export class TokenPair extends Schema.Class<TokenPair>("TokenPair")({
  accessToken: Schema.Redacted(Schema.String),
  refreshToken: Schema.Redacted(Schema.String),
  tokenType: Schema.Literal("Bearer"),
  expiresIn: Schema.Int.annotations({ description: "Seconds until the access token expires" })
}) {}

export class ChangePasswordPayload extends Schema.Class<ChangePasswordPayload>("ChangePasswordPayload")({
  currentPassword: Schema.Redacted(Schema.String.pipe(Schema.maxLength(1024))),
  newPassword: Password
}) {}

export class ApiKeyView extends Schema.Class<ApiKeyView>("ApiKeyView")({
  id: ApiKeyId,
  name: Schema.String,
  prefix: Schema.String.annotations({ description: "The visible start of the key, to recognise it" }),
  scopes: Schema.Array(Permission),
  expiresAt: Schema.NullOr(Schema.DateTimeUtc),
  lastUsedAt: Schema.NullOr(Schema.DateTimeUtc),
  revokedAt: Schema.NullOr(Schema.DateTimeUtc),
  rateLimitPerMinute: Schema.NullOr(Schema.Int).annotations({
    description:
      "Answers the key may ask models for per minute (chat turns and gateway completions); null: no limit of its own"
  }),
  models: Schema.NullOr(Schema.Array(LlmModelId)).annotations({
    description: "The only models the key may see and use, by id; null: every model its owner may use"
  }),
  tokenBudget: Schema.NullOr(Schema.Int).annotations({
    description: "Tokens the key may spend per `TOKEN_BUDGET_PERIOD`, within its owner's budget; null: none of its own"
  }),
  createdAt: Schema.DateTimeUtc
}) {}

export class CreateApiKeyPayload extends Schema.Class<CreateApiKeyPayload>("CreateApiKeyPayload")({
  name: Schema.String.pipe(Schema.trimmed(), Schema.minLength(1), Schema.maxLength(100)),
  scopes: Schema.Array(Permission).pipe(Schema.minItems(1)).annotations({
    description: "What the key may do: a subset of your own permissions"
  }),
  expiresAt: Schema.optional(Schema.DateTimeUtc),
  rateLimitPerMinute: Schema.optional(
    Schema.Int.pipe(Schema.between(1, 60_000)).annotations({
      description: "Answers the key may ask models for per minute (at most 60,000), on top of any limit its owner has"
    })
  ),
  tokenBudget: Schema.optional(
    Schema.Int.pipe(Schema.between(1, 1_000_000_000_000)).annotations({
      description: "Tokens the key may spend per `TOKEN_BUDGET_PERIOD` (chat and gateway), within its owner's budget"
    })
  ),
  models: Schema.optional(
    Schema.Array(LlmModelId).pipe(Schema.minItems(1), Schema.maxItems(100)).annotations({
      description: "Limit the key to these models (1 to 100 ids from `GET /api/v1/models`); every other model is " +
        "unknown to it, in the model list, in chat and at the gateway"
    })
  )
}) {}

export class CreatedApiKey extends Schema.Class<CreatedApiKey>("CreatedApiKey")({
  apiKey: ApiKeyView,
  secret: Schema.Redacted(Schema.String).annotations({ description: "The key itself (`wp_…`), shown only this once" })
}) {}

export class AuthApi extends HttpApiGroup.make("auth")
  .add(
    HttpApiEndpoint.post("register", "/api/v1/auth/register")
      .setPayload(request(RegisterPayload))
      .addSuccess(UserView, { status: 201 })
      .addError(Conflict)
      .addError(Forbidden)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Create an account (the first one becomes admin)")
      .annotate(
        OpenApi.Description,
        "With `REGISTRATION=closed` only the first account registers (403 after it); administrators create the others."
      )
  )
  .add(
    HttpApiEndpoint.post("login", "/api/v1/auth/login")
      .setPayload(request(LoginPayload))
      .addSuccess(TokenPair)
      .addError(Unauthorized)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Sign in with email or username and password")
  )
  .add(
    HttpApiEndpoint.post("refresh", "/api/v1/auth/refresh")
      .setPayload(request(RefreshPayload))
      .addSuccess(TokenPair)
      .addError(Unauthorized)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Exchange a refresh token for new tokens (the old one stops working)")
  )
  .add(
    HttpApiEndpoint.post("logout", "/api/v1/auth/logout")
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Forbidden)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "End the current session")
  )
  .add(
    HttpApiEndpoint.get("me", "/api/v1/auth/me")
      .addSuccess(UserView)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "The signed-in user")
  )
  .add(
    HttpApiEndpoint.post("changePassword", "/api/v1/auth/password")
      .setPayload(request(ChangePasswordPayload))
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Forbidden)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Change the password; every other session ends")
  )
  .add(
    HttpApiEndpoint.post("createApiKey", "/api/v1/auth/api-keys")
      .setPayload(request(CreateApiKeyPayload))
      .addSuccess(CreatedApiKey, { status: 201 })
      .addError(Forbidden)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Create an API key; its secret is shown once")
  )
  .add(
    HttpApiEndpoint.get("listApiKeys", "/api/v1/auth/api-keys")
      .addSuccess(Schema.Struct({ items: Schema.Array(ApiKeyView), nextCursor: Schema.Null }))
      .addError(Forbidden)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Your API keys (never their secrets)")
  )
  .add(
    HttpApiEndpoint.del("revokeApiKey", "/api/v1/auth/api-keys/:id")
      .setPath(request(Schema.Struct({ id: ApiKeyId })))
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Forbidden)
      .addError(NotFound)
      .middleware(Authentication)
      .annotate(OpenApi.Summary, "Revoke an API key")
  )
  .annotate(OpenApi.Description, "Accounts, sessions and API keys")
{}
