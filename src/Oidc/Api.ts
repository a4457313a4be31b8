/**
 * Single sign-on with an OpenID Connect provider: whether it is on, the redirect to the provider,
 * its callback, and the exchange of the one-time code the front end receives for tokens.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { TokenPair } from "../Auth/Api.js"
import { NotFound, RateLimited, ServiceUnavailable, Unauthorized } from "../Domain/Errors.js"
import { request } from "../Domain/Request.js"

export class OidcInfo extends Schema.Class<OidcInfo>("OidcInfo")({
  enabled: Schema.Boolean,
  name: Schema.NullOr(Schema.String).annotations({
    description: "What to call the provider on a sign-in button (`OIDC_PROVIDER_NAME`); null when single sign-on is off"
  })
}) {}

export const OidcLoginQuery = Schema.Struct({
  redirect: Schema.optional(
    Schema.String.pipe(Schema.maxLength(2048)).annotations({
      description: "The front-end URL to return to, one `OIDC_ALLOWED_REDIRECTS` allows (by default its first)"
    })
  )
})

/** What the provider sends back to the callback (RFC 6749 §4.1.2). */
export const OidcCallbackQuery = Schema.Struct({
  code: Schema.optional(Schema.String.pipe(Schema.maxLength(4096))),
  state: Schema.optional(Schema.String.pipe(Schema.maxLength(512))),
  error: Schema.optional(Schema.String.pipe(Schema.maxLength(256))),
  error_description: Schema.optional(Schema.String.pipe(Schema.maxLength(2048)))
})

export class OidcTokenPayload extends Schema.Class<OidcTokenPayload>("OidcTokenPayload")({
  code: Schema.Redacted(Schema.String.pipe(Schema.maxLength(200))).annotations({
    description: "The one-time `code` the callback gave the front end (valid about a minute, once)"
  })
}) {}

/**
 * Why a sign-in did not succeed, as the front end receives it in the `error` query parameter of
 * its redirect URL (with a readable `error_description`).
 */
export const OidcFailure = Schema.Literal(
  /** The provider refused or the person cancelled. */
  "access_denied",
  /** The sign-in attempt was older than ten minutes. */
  "login_expired",
  /** The account is disabled. */
  "account_disabled",
  /** The email address's domain is not in `OIDC_ALLOWED_DOMAINS`, or the provider did not verify the address. */
  "domain_not_allowed",
  /**
   * No account, and none may be created (`OIDC_AUTO_REGISTER` off, or the provider did not verify the
   * email); or one exists with this email, which the provider did not verify.
   */
  "account_not_found",
  /** An account with this email exists and `OIDC_LINK_BY_EMAIL` is off: an administrator links it. */
  "account_exists",
  /**
   * The provider cannot be reached or answered something unusable (an ID token that does not verify, a
   * userinfo answer that fails or is about someone else), or the sign-in was started under an encryption
   * key this server no longer has.
   */
  "server_error"
)
export type OidcFailure = typeof OidcFailure.Type

const redirect = (description: string) =>
  HttpApiSchema.Empty(302).annotations({ description: `${description} (\`Location\`)` })

export class OidcApi extends HttpApiGroup.make("oidc")
  .add(
    HttpApiEndpoint.get("info", "/api/v1/auth/oidc")
      .addSuccess(OidcInfo)
      .annotate(OpenApi.Summary, "Whether single sign-on is on, and the provider's name")
  )
  .add(
    HttpApiEndpoint.get("login", "/api/v1/auth/oidc/login")
      .setUrlParams(request(OidcLoginQuery))
      .addSuccess(redirect("To the provider's authorization endpoint"))
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Start a single sign-on: redirects to the identity provider")
      .annotate(
        OpenApi.Description,
        "Open in the browser (a navigation, not a fetch). A `redirect` that `OIDC_ALLOWED_REDIRECTS` does not " +
          "allow is a 422; when the provider cannot be reached, the browser is sent back to `redirect` with " +
          "`error=server_error`. 404 when single sign-on is off."
      )
  )
  .add(
    HttpApiEndpoint.get("callback", "/api/v1/auth/oidc/callback")
      .setUrlParams(request(OidcCallbackQuery))
      .addSuccess(redirect("To the sign-in's front-end URL, with `code` or `error` and `error_description`"))
      .addError(Unauthorized)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Where the identity provider sends the browser back")
      .annotate(
        OpenApi.Description,
        "Register this URL (`OIDC_REDIRECT_URI`) at the provider. The browser goes on to the front end with a " +
          "one-time `code` to exchange at `POST /api/v1/auth/oidc/token`, or with `error` (`access_denied`, " +
          "`login_expired`, `account_disabled`, `domain_not_allowed`, `account_not_found`, `account_exists`, " +
          "`server_error`) and " +
          "`error_description`. An unknown, used or foreign sign-in attempt is a 401: there is nowhere safe to go."
      )
  )
  .add(
    HttpApiEndpoint.post("token", "/api/v1/auth/oidc/token")
      .setPayload(request(OidcTokenPayload))
      .addSuccess(TokenPair)
      .addError(Unauthorized)
      .addError(NotFound)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .annotate(OpenApi.Summary, "Exchange a single sign-on's one-time code for tokens (as a password sign-in gives)")
  )
  .annotate(OpenApi.Description, "Single sign-on with an OpenID Connect provider (authorization code flow, PKCE)")
{}
