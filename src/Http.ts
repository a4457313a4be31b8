/**
 * Serves the API: the groups' handlers, the error model, OpenAPI at
 * `/openapi.json`, the interactive reference at `/docs`, CORS and the
 * per-request middleware, on the Node HTTP server.
 */
import { FetchHttpClient, type HttpApi, HttpApiBuilder, HttpApiScalar, HttpMiddleware } from "@effect/platform"
import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { WebPlusApi } from "./Api.js"
import { rpcPath } from "./ApiBeside.js"
import { AuditLog } from "./Audit.js"
import { AuditRepo } from "./Audit/AuditRepo.js"
import { Auth, SessionCleanupLive } from "./Auth.js"
import { ApiKeysRepo } from "./Auth/ApiKeysRepo.js"
import { AuthenticationLive, AuthHttpLive } from "./Auth/Http.js"
import { Passwords } from "./Auth/Passwords.js"
import { RateLimiterLive, RateLimits } from "./Auth/RateLimits.js"
import { SessionsRepo } from "./Auth/SessionsRepo.js"
import { Tokens } from "./Auth/Tokens.js"
import { ChatEngine } from "./Chat.js"
import { AnswerRepo } from "./Chat/AnswerRepo.js"
import { ChatHttpLive } from "./Chat/Http.js"
import { AnswerRelay } from "./Chat/Relay.js"
import { ChatSocketLive } from "./Chat/Socket.js"
import { AppConfig } from "./Config.js"
import { Conversations, TrashSweepLive } from "./Conversations.js"
import { ConversationRepo } from "./Conversations/ConversationRepo.js"
import { ConversationsHttpLive } from "./Conversations/Http.js"
import { SearchRepo } from "./Conversations/SearchRepo.js"
import { Feedback } from "./Feedback.js"
import { FeedbackRepo } from "./Feedback/FeedbackRepo.js"
import { FeedbackHttpLive } from "./Feedback/Http.js"
import { Files } from "./Files.js"
import { Attachments } from "./Files/Attachments.js"
import { FilesRepo } from "./Files/FilesRepo.js"
import { FilesHttpLive } from "./Files/Http.js"
import { FilePassages } from "./Files/Passages.js"
import { PassagesRepo } from "./Files/PassagesRepo.js"
import { FileStorage } from "./Files/Storage.js"
import { Gateway } from "./Gateway.js"
import { GatewayRoutesLive, UsageHttpLive } from "./Gateway/Http.js"
import { UsageRepo } from "./Gateway/UsageRepo.js"
import { Graph } from "./Graph.js"
import { EmbeddingsRepo } from "./Graph/EmbeddingsRepo.js"
import { GraphRepo } from "./Graph/GraphRepo.js"
import { GraphHttpLive } from "./Graph/Http.js"
import { GraphSemantic } from "./Graph/Semantic.js"
import { Health } from "./Health.js"
import { HealthHttpLive } from "./Health/Http.js"
import { AddressRateLimitLive } from "./Http/AddressRateLimit.js"
import { compression } from "./Http/Compression.js"
import { ErrorModelLive } from "./Http/ErrorModel.js"
import { requestContext } from "./Http/Middleware.js"
import { HttpServerLive } from "./Http/Server.js"
import { JobQueuesLive, JobsSweepLive } from "./Jobs.js"
import { ModelRegistry } from "./Models.js"
import { CredentialCipher } from "./Models/CredentialCipher.js"
import { EmbeddingModels } from "./Models/Embedding.js"
import { EnvironmentProvidersLive } from "./Models/EnvironmentProviders.js"
import { EventHub } from "./Models/Events.js"
import { ModelsApiLive } from "./Models/Http.js"
import { ModelConfigsRepo } from "./Models/ModelConfigsRepo.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { ProvidersRepo } from "./Models/ProvidersRepo.js"
import { Oidc, OidcCleanupLive } from "./Oidc.js"
import { OidcHttpLive } from "./Oidc/Http.js"
import { OidcRepo } from "./Oidc/OidcRepo.js"
import { OidcProvider } from "./Oidc/Provider.js"
import { ProviderClients } from "./Providers.js"
import { RpcLive } from "./Rpc/Server.js"
import { Shares } from "./Shares.js"
import { PublicSharesHttpLive, SharesHttpLive } from "./Shares/Http.js"
import { SharesRepo } from "./Shares/SharesRepo.js"
import { Users } from "./Users.js"
import { AdminHttpLive, MeHttpLive } from "./Users/Http.js"
import { PersonalDataRepo } from "./Users/PersonalDataRepo.js"
import { UsersRepo } from "./Users/UsersRepo.js"

export const docsPath = "/docs"
export const openApiPath = "/openapi.json"

const CorsLive = Layer.unwrapEffect(
  Effect.map(AppConfig, ({ corsOrigins }) =>
    corsOrigins.length === 0 ? Layer.empty : HttpApiBuilder.middlewareCors({
      allowedOrigins: corsOrigins.includes("*") ? () => true : corsOrigins,
      allowedHeaders: ["authorization", "content-type", "x-api-key", "x-request-id", "last-event-id"],
      exposedHeaders: ["x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
      maxAge: 600
    }))
)

/**
 * Serves an API built by `apiLayer` (`HttpApiBuilder.api(…)` with its groups)
 * with everything every API of this server gets.
 */
export const serve = <E, R>(apiLayer: Layer.Layer<HttpApi.Api, E, R>) =>
  Layer.unwrapEffect(
    Effect.map(AppConfig, ({ compression: compressing, hstsMaxAge, trustProxy }) =>
      HttpApiBuilder.serve((app) =>
        requestContext({ docsPath, trustProxy, hstsMaxAge, passClientOn: [rpcPath] })(
          compressing.enabled ? compression(compressing.minSize)(app) : app
        ).pipe(HttpMiddleware.withLoggerDisabled)
      ))
  ).pipe(
    // Listening starts only once everything below is built: a connection accepted earlier would hang.
    Layer.provideMerge(HttpServerLive),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: openApiPath })),
    Layer.provide(HttpApiScalar.layer({ path: docsPath, scalar: { withDefaultFonts: false } })),
    Layer.provide(ErrorModelLive),
    Layer.provide(CorsLive),
    Layer.provide(apiLayer)
  )

const ReposLive = Layer.mergeAll(
  UsersRepo.Default,
  SessionsRepo.Default,
  ApiKeysRepo.Default,
  AuditRepo.Default,
  PersonalDataRepo.Default,
  ConversationRepo.Default,
  SearchRepo.Default,
  ProvidersRepo.Default,
  ModelsRepo.Default,
  ModelConfigsRepo.Default,
  AnswerRepo.Default,
  UsageRepo.Default,
  FilesRepo.Default,
  GraphRepo.Default,
  EmbeddingsRepo.Default,
  PassagesRepo.Default,
  SharesRepo.Default,
  OidcRepo.Default,
  FeedbackRepo.Default
)

const AuthSupportLive = Layer.mergeAll(
  Passwords.Default,
  Tokens.Default,
  RateLimits.Default.pipe(Layer.provide(RateLimiterLive)),
  AuditLog.Default.pipe(Layer.provide(ReposLive))
)

const ModelSupportLive = Layer.mergeAll(
  ProviderClients.Default.pipe(Layer.provide(FetchHttpClient.layer)),
  EventHub.Default,
  AnswerRelay.Default
)

/** The services behind the handlers, with what they stand on. */
export const ServicesLive = Layer.mergeAll(
  ChatEngine.Default,
  Users.Default,
  Health.Default,
  Gateway.Default,
  Files.Default,
  Graph.Default,
  Shares.Default,
  Feedback.Default,
  Oidc.Default.pipe(Layer.provide(OidcProvider.Default.pipe(Layer.provide(FetchHttpClient.layer)))),
  OidcCleanupLive,
  JobsSweepLive,
  SessionCleanupLive,
  TrashSweepLive
).pipe(
  Layer.provideMerge(Conversations.Default),
  Layer.provideMerge(GraphSemantic.Default),
  Layer.provideMerge(FilePassages.Default),
  Layer.provideMerge(EmbeddingModels.Default),
  Layer.provideMerge(Auth.Default),
  Layer.provideMerge(EnvironmentProvidersLive),
  Layer.provideMerge(ModelRegistry.Default),
  Layer.provideMerge(ModelSupportLive),
  Layer.provideMerge(Attachments.Default),
  Layer.provideMerge(JobQueuesLive),
  Layer.provideMerge(AuthSupportLive),
  Layer.provideMerge(FileStorage.Default.pipe(Layer.provide(NodeFileSystem.layer), Layer.provide(NodePath.layer))),
  // Files' data keys are sealed as credentials are.
  Layer.provideMerge(CredentialCipher.Default),
  Layer.provideMerge(ReposLive)
)

/** The handlers of every group of `WebPlusApi`. */
export const ApiGroupsLive = Layer.mergeAll(
  HealthHttpLive,
  AuthHttpLive,
  OidcHttpLive,
  AdminHttpLive,
  MeHttpLive,
  ConversationsHttpLive,
  ChatHttpLive,
  FeedbackHttpLive,
  FilesHttpLive,
  GraphHttpLive,
  SharesHttpLive,
  PublicSharesHttpLive,
  ModelsApiLive,
  UsageHttpLive,
  GatewayRoutesLive,
  RpcLive,
  ChatSocketLive,
  AddressRateLimitLive
).pipe(
  Layer.provide(AuthenticationLive),
  Layer.provideMerge(ServicesLive)
)

export const ApiLive = HttpApiBuilder.api(WebPlusApi).pipe(Layer.provide(ApiGroupsLive))

export const HttpLive = serve(ApiLive)
