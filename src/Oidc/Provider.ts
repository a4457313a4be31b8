/**
 * The OpenID Connect provider as this server talks to it: its discovery document (read when first
 * needed and kept for an hour, so the server starts while the provider is down), the
 * authorization URL of a sign-in, the token request (PKCE, `client_secret_basic` when the client
 * has a secret), the ID token's verification against the provider's published keys (`jose`), and
 * the userinfo endpoint when the ID token leaves out the email or whether it is verified.
 *
 * Failures are `OidcProviderFailure`s whose reason is fit for the log: the status, the OAuth error
 * code or the claim that failed; never a body, a token or the client secret.
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Cache, Clock, Data, Duration, Effect, Exit, Option, Redacted, Schema } from "effect"
import * as Jose from "jose"
import { AppConfig, type OidcSettings } from "../Config.js"

export class OidcProviderFailure extends Data.TaggedError("OidcProviderFailure")<{ readonly reason: string }> {}

const Discovery = Schema.Struct({
  issuer: Schema.String,
  authorization_endpoint: Schema.String,
  token_endpoint: Schema.String,
  jwks_uri: Schema.String,
  userinfo_endpoint: Schema.optional(Schema.String),
  id_token_signing_alg_values_supported: Schema.optional(Schema.Array(Schema.String))
})
type Discovery = typeof Discovery.Type

const TokenResponse = Schema.Struct({ id_token: Schema.String, access_token: Schema.optional(Schema.String) })
const TokenError = Schema.Struct({ error: Schema.String })
/** A userinfo answer (OpenID Connect Core §5.3.2): JSON claims about the access token's subject. */
const UserinfoClaims = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** Whether a claim says "verified": some providers (Amazon Cognito among them) send the string "true". */
const isTrue = (value: unknown) => value === true || value === "true"
const text = (value: unknown) => (typeof value === "string" && value.length > 0 ? value : null)

/** What this server takes from a verified ID token. */
export interface VerifiedIdentity {
  readonly issuer: string
  readonly subject: string
  readonly email: string | null
  readonly emailVerified: boolean
  readonly preferredUsername: string | null
}

/** Asymmetric signatures only: a symmetric one would be keyed by the client secret, and `none` by nothing. */
const asymmetric = (alg: string) => /^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$/.test(alg)

const requestTimeout = Duration.seconds(10)
const discoveryTtl = Duration.hours(1)

const withoutTrailingSlash = (url: string) => url.replace(/\/+$/, "")

/** `application/x-www-form-urlencoded` as RFC 6749 §2.3.1 wants the Basic credentials' parts. */
const formEncode = (value: string) => encodeURIComponent(value).replace(/%20/g, "+")

interface ProviderMetadata {
  readonly document: Discovery
  readonly keys: ReturnType<typeof Jose.createRemoteJWKSet>
  readonly algorithms: ReadonlyArray<string>
}

export class OidcProvider extends Effect.Service<OidcProvider>()("Oidc/OidcProvider", {
  effect: Effect.gen(function*() {
    const { oidc } = yield* AppConfig
    const http = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)

    const fail = (reason: string) => new OidcProviderFailure({ reason })

    const fetchMetadata = (settings: OidcSettings) =>
      Effect.gen(function*() {
        const url = `${withoutTrailingSlash(settings.issuer)}/.well-known/openid-configuration`
        const document = yield* http.get(url, { headers: { accept: "application/json" } }).pipe(
          Effect.flatMap(HttpClientResponse.schemaBodyJson(Discovery)),
          Effect.scoped,
          Effect.timeoutFail({ duration: requestTimeout, onTimeout: () => fail("discovery: no answer in time") }),
          Effect.catchTags({
            RequestError: () => Effect.fail(fail("discovery: cannot connect")),
            ResponseError: (error) => Effect.fail(fail(`discovery: HTTP ${error.response.status}`)),
            ParseError: () => Effect.fail(fail("discovery: not an OpenID provider configuration"))
          })
        )
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if (withoutTrailingSlash(document.issuer) !== withoutTrailingSlash(settings.issuer)) {
          return yield* fail("discovery: the document names another issuer")
        }
        const algorithms = (document.id_token_signing_alg_values_supported ?? ["RS256"]).filter(asymmetric)
        if (algorithms.length === 0) return yield* fail("discovery: no asymmetric ID token signing algorithm")
        const keys = yield* Effect.try({
          try: () => Jose.createRemoteJWKSet(new URL(document.jwks_uri), { timeoutDuration: 10_000 }),
          catch: () => fail("discovery: jwks_uri is not a URL")
        })
        return { document, keys, algorithms } satisfies ProviderMetadata
      }).pipe(Effect.withSpan("OidcProvider.discover"))

    // One entry (the configured issuer). Only a success is kept: a provider that was down is asked again.
    const metadataCache = yield* Cache.makeWith({
      capacity: 1,
      lookup: (_issuer: string) =>
        Option.match(oidc, {
          onNone: () => Effect.fail(fail("single sign-on is not configured")),
          onSome: fetchMetadata
        }),
      timeToLive: (exit: Exit.Exit<ProviderMetadata, OidcProviderFailure>) =>
        Exit.isSuccess(exit) ? discoveryTtl : Duration.zero
    })

    const metadata = (settings: OidcSettings) => metadataCache.get(settings.issuer)

    /** The provider's authorization URL for a sign-in with these `state`, `nonce` and PKCE challenge. */
    const authorizationUrl = (
      settings: OidcSettings,
      params: { readonly state: string; readonly nonce: string; readonly codeChallenge: string }
    ) =>
      Effect.map(metadata(settings), ({ document }) => {
        const url = new URL(document.authorization_endpoint)
        url.searchParams.set("response_type", "code")
        url.searchParams.set("client_id", settings.clientId)
        url.searchParams.set("redirect_uri", settings.redirectUri)
        url.searchParams.set("scope", settings.scopes)
        url.searchParams.set("state", params.state)
        url.searchParams.set("nonce", params.nonce)
        url.searchParams.set("code_challenge", params.codeChallenge)
        url.searchParams.set("code_challenge_method", "S256")
        return url.toString()
      })

    /** The claims the userinfo endpoint gives for `accessToken` (a Bearer token). */
    const userinfo = (endpoint: string, accessToken: string) =>
      http.get(endpoint, { headers: { accept: "application/json", authorization: `Bearer ${accessToken}` } }).pipe(
        Effect.flatMap(HttpClientResponse.schemaBodyJson(UserinfoClaims)),
        Effect.scoped,
        Effect.timeoutFail({ duration: requestTimeout, onTimeout: () => fail("userinfo: no answer in time") }),
        Effect.catchTags({
          RequestError: () => Effect.fail(fail("userinfo: cannot connect")),
          ResponseError: (error) => Effect.fail(fail(`userinfo: HTTP ${error.response.status}`)),
          ParseError: () => Effect.fail(fail("userinfo: not a JSON object of claims"))
        }),
        Effect.withSpan("OidcProvider.userinfo")
      )

    /**
     * Trades the authorization code for an ID token, and verifies it; the identity it vouches for,
     * completed from the userinfo endpoint when the token has no email or no `email_verified` (and
     * as the token has it when the endpoint does not answer).
     */
    const redeem = (
      settings: OidcSettings,
      params: { readonly code: string; readonly codeVerifier: Redacted.Redacted<string>; readonly nonce: string }
    ): Effect.Effect<VerifiedIdentity, OidcProviderFailure> =>
      Effect.gen(function*() {
        const { algorithms, document, keys } = yield* metadata(settings)
        let request = HttpClientRequest.post(document.token_endpoint).pipe(
          HttpClientRequest.acceptJson,
          HttpClientRequest.bodyUrlParams({
            grant_type: "authorization_code",
            code: params.code,
            redirect_uri: settings.redirectUri,
            code_verifier: Redacted.value(params.codeVerifier),
            ...(Option.isNone(settings.clientSecret) ? { client_id: settings.clientId } : {})
          })
        )
        if (Option.isSome(settings.clientSecret)) {
          const basic = `${formEncode(settings.clientId)}:${formEncode(Redacted.value(settings.clientSecret.value))}`
          request = HttpClientRequest.setHeader(request, "authorization", `Basic ${btoa(basic)}`)
        }
        const tokens = yield* http.execute(request).pipe(
          Effect.flatMap(HttpClientResponse.schemaBodyJson(TokenResponse)),
          Effect.scoped,
          Effect.timeoutFail({ duration: requestTimeout, onTimeout: () => fail("token endpoint: no answer in time") }),
          Effect.catchTags({
            RequestError: () => Effect.fail(fail("token endpoint: cannot connect")),
            ResponseError: (error) =>
              // The OAuth error code is safe to log; the rest of the body is the provider's business.
              error.response.json.pipe(
                Effect.flatMap(Schema.decodeUnknown(TokenError)),
                Effect.map(({ error: code }) => ` (${code.replace(/[^\w.-]/g, "").slice(0, 64)})`),
                Effect.orElseSucceed(() => ""),
                Effect.flatMap((code) => Effect.fail(fail(`token endpoint: HTTP ${error.response.status}${code}`)))
              ),
            ParseError: () => Effect.fail(fail("token endpoint: no ID token in the answer"))
          })
        )
        const now = yield* Clock.currentTimeMillis
        const { payload } = yield* Effect.tryPromise({
          try: () =>
            Jose.jwtVerify(tokens.id_token, keys, {
              issuer: document.issuer,
              audience: settings.clientId,
              algorithms: [...algorithms],
              requiredClaims: ["sub", "exp", "iat"],
              currentDate: new Date(now),
              clockTolerance: 30
            }),
          catch: (error) =>
            fail(
              error instanceof Jose.errors.JWTClaimValidationFailed
                ? `ID token: ${error.claim} ${error.reason}`
                : error instanceof Jose.errors.JOSEError
                ? `ID token: ${error.code}`
                : "ID token: does not verify"
            )
        })
        if (payload.nonce !== params.nonce) return yield* fail("ID token: nonce does not match")
        // OpenID Connect Core §3.1.3.7: with several audiences, the client must be the authorized party.
        if (payload.azp !== undefined && payload.azp !== settings.clientId) {
          return yield* fail("ID token: issued to another party (azp)")
        }
        const fromToken: VerifiedIdentity = {
          issuer: document.issuer,
          subject: payload.sub!,
          email: text(payload.email),
          emailVerified: isTrue(payload.email_verified),
          preferredUsername: text(payload.preferred_username)
        }
        // Some providers put only `sub` in the ID token and the rest at the userinfo endpoint.
        const incomplete = fromToken.email === null || payload.email_verified === undefined
        if (!incomplete || document.userinfo_endpoint === undefined || tokens.access_token === undefined) {
          return fromToken
        }
        // Unanswered (down, or refusing an access token meant for another API): the ID token's claims
        // as they are, an address in it unverified. A known identity still signs in; what needs a
        // verified address (a new account, a link) is refused further on.
        const answered = yield* userinfo(document.userinfo_endpoint, tokens.access_token).pipe(
          Effect.map(Option.some),
          Effect.catchAll((failure) =>
            Effect.as(
              Effect.logWarning(`Single sign-on: the userinfo endpoint did not answer; the ID token's claims are used`)
                .pipe(Effect.annotateLogs({ reason: failure.message })),
              Option.none()
            )
          )
        )
        if (Option.isNone(answered)) return fromToken
        const claims = answered.value
        // OpenID Connect Core §5.3.4: claims about anyone but the ID token's subject are not used.
        if (claims.sub !== fromToken.subject) return yield* fail("userinfo: sub does not match the ID token")
        const email = text(claims.email)
        return {
          ...fromToken,
          // An address and whether it is verified come from one place, never one from each.
          ...(email === null ? {} : { email, emailVerified: isTrue(claims.email_verified) }),
          preferredUsername: fromToken.preferredUsername ?? text(claims.preferred_username)
        }
      }).pipe(Effect.withSpan("OidcProvider.redeem"))

    return { authorizationUrl, redeem } as const
  })
}) {}
