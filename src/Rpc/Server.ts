/**
 * `WebPlusRpcs` served beside the REST API, on the same HTTP server, at
 * `/rpc`: over HTTP (`POST`, NDJSON) and over WebSocket (`GET` with an
 * upgrade, JSON messages). Streams over WebSocket wait for the client's
 * acknowledgement of each chunk, so a slow reader holds the server back
 * instead of filling its memory.
 * Each handler is the REST handler's one call into the same service, so the
 * policies, the validation and the typed errors are the same; the caller is
 * authenticated by the same `Auth.authenticate`, from the request's (or the
 * upgrade's, or the call's) `authorization` or `x-api-key` header.
 */
import { HttpApiBuilder } from "@effect/platform"
import { RpcSerialization, RpcServer } from "@effect/rpc"
import { Cause, Effect, Layer, Option, Redacted, Stream } from "effect"
import * as Crypto from "node:crypto"
import { rpcPath } from "../ApiBeside.js"
import { AuditLog } from "../Audit.js"
import { Auth, credentialIn } from "../Auth.js"
import { RateLimits } from "../Auth/RateLimits.js"
import { ChatEngine, type Following, followingStream, type Turn } from "../Chat.js"
import { Conversations } from "../Conversations.js"
import { ServiceUnavailable, Unauthorized } from "../Domain/Errors.js"
import { Feedback } from "../Feedback.js"
import { Files } from "../Files.js"
import { Gateway } from "../Gateway.js"
import { Graph } from "../Graph.js"
import { CurrentClient, CurrentRequestId, passedOn } from "../Http/Middleware.js"
import { ModelRegistry } from "../Models.js"
import { Shares } from "../Shares.js"
import { databaseUnavailable, databaseUnavailableMessage, logDatabaseUnavailable } from "../Sql.js"
import { Users } from "../Users.js"
import { RpcAuthentication, RpcClientContext, WebPlusRpcs } from "./Api.js"

/** `POST` for RPC over HTTP (NDJSON), `GET` to open a WebSocket (JSON messages). */

/** Each call: its caller, held to the general per-user limit (`RATE_LIMIT_PER_USER`) as a REST request is. */
const RpcAuthenticationLive = Layer.effect(
  RpcAuthentication,
  Effect.gen(function*() {
    const auth = yield* Auth
    const rateLimits = yield* RateLimits
    return ({ headers }) => {
      const credential = credentialIn(headers)
      return credential === undefined || credential.length === 0
        ? Effect.fail(new Unauthorized({ message: "Send a bearer token or an API key" }))
        : Effect.tap(auth.authenticate(Redacted.make(credential)), rateLimits.userRequest)
    }
  })
)

/** What a client is told of a defect: that there was one, and which request to look for in the logs. */
const internalError = (requestId: string) =>
  Object.assign(new Error(`Internal server error (request id ${requestId})`), { name: "InternalError" })

/**
 * A defect as the client is told it: while the database cannot be reached, a typed failure saying to
 * try again (the REST API's 503); anything else, that there was one and the request id.
 */
const reportDefect = (cause: Cause.Cause<unknown>, requestId: string) =>
  Option.match(databaseUnavailable(cause), {
    onNone: () => Effect.zipRight(Effect.logError("Unexpected failure", cause), Effect.die(internalError(requestId))),
    onSome: (error) =>
      Effect.zipRight(
        logDatabaseUnavailable(error),
        new ServiceUnavailable({ message: `${databaseUnavailableMessage} (request id ${requestId})` })
      )
  })

/**
 * Each call runs as part of the HTTP request (or the WebSocket's upgrade) it came in, as the REST
 * handlers do: with its client, and its request id on every log line (with the call's name). A
 * defect is logged there, and the client is told only that there was one and the request id (as
 * the REST API's 500); it ends that call alone (`disableFatalDefects`), not the client's others.
 */
const RpcClientContextLive = Layer.succeed(
  RpcClientContext,
  RpcClientContext.of(({ headers, next, rpc }) => {
    const passed = passedOn(headers)
    const requestId = passed?.requestId || Crypto.randomUUID()
    const served = next.pipe(
      Effect.catchAllCause((cause) => Cause.isDie(cause) ? reportDefect(cause, requestId) : Effect.failCause(cause)),
      Effect.annotateLogs({ requestId, rpc: rpc._tag }),
      Effect.locally(CurrentRequestId, requestId)
    )
    return passed === null ? served : Effect.locally(served, CurrentClient, passed.client)
  })
)

/** An answer's events one by one, keep-alives left out (RPC streams need none). */
const oneByOne = <E, R>(following: Effect.Effect<Following, E, R>) =>
  Stream.unwrap(Effect.map(following, (events) => Stream.flattenIterables(followingStream(events))))

const eventsOf = <E, R>(turn: Effect.Effect<Turn, E, R>) => oneByOne(Effect.map(turn, (started) => started.events))

const HandlersLive = WebPlusRpcs.toLayer(Effect.gen(function*() {
  const auth = yield* Auth
  const conversations = yield* Conversations
  const registry = yield* ModelRegistry
  const engine = yield* ChatEngine
  const users = yield* Users
  const audit = yield* AuditLog
  const gateway = yield* Gateway
  const files = yield* Files
  const graph = yield* Graph
  const shares = yield* Shares
  const feedback = yield* Feedback
  return {
    register: (payload) => auth.register(payload),
    login: (payload) => auth.login(payload),
    refresh: ({ refreshToken }) => auth.refresh(refreshToken),
    logout: () => auth.logout,
    me: () => auth.currentUser,
    changePassword: (payload) => auth.changePassword(payload),
    createApiKey: (payload) => auth.createApiKey(payload),
    listApiKeys: () => auth.listApiKeys,
    revokeApiKey: ({ id }) => auth.revokeApiKey(id),

    createConversation: (payload) => conversations.create(payload),
    listConversations: (query) => conversations.list(query),
    getConversation: ({ id }) => conversations.get(id),
    updateConversation: ({ changes, id }) => conversations.update(id, changes),
    deleteConversation: ({ id }) => conversations.trash(id),
    restoreConversation: ({ id }) => conversations.restore(id),
    purgeConversation: ({ id }) => conversations.purge(id),
    listMessages: ({ id, query }) => conversations.listMessages(id, query),
    appendMessage: ({ id, message }) => conversations.appendMessage(id, message),
    getMessage: ({ id, messageId }) => conversations.getMessage(id, messageId),
    editMessage: ({ edit, id, messageId }) => conversations.editMessage(id, messageId, edit),
    deleteMessage: ({ id, messageId }) => conversations.deleteMessage(id, messageId),
    setCurrentLeaf: ({ id, leaf }) => conversations.setCurrentLeaf(id, leaf),
    createThread: ({ id, thread }) => conversations.createThread(id, thread),
    listThreads: ({ id, page }) => conversations.listThreads(id, page),
    updateThread: ({ changes, id, threadId }) => conversations.updateThread(id, threadId, changes),
    deleteThread: ({ id, threadId }) => conversations.deleteThread(id, threadId),
    listThreadMessages: ({ id, page, threadId }) => conversations.listThreadMessages(id, threadId, page),
    appendThreadMessage: ({ id, message, threadId }) => conversations.appendThreadMessage(id, threadId, message),
    search: (query) => conversations.search(query),
    exportConversation: ({ id }) => conversations.exportJson(id),
    exportConversationMarkdown: ({ id }) => conversations.exportMarkdown(id),
    importConversation: ({ document }) => conversations.importConversation(document),
    importOpenWebUi: ({ file }) => conversations.importOpenWebUi(file),
    importChatGpt: ({ file }) => conversations.importChatGpt(file),

    setFeedback: ({ feedback: payload, id, messageId }) => feedback.set(id, messageId, payload),
    deleteFeedback: ({ id, messageId }) => feedback.remove(id, messageId),
    listFeedback: ({ id }) => feedback.ofConversation(id),
    feedbackSummary: (query) => feedback.summary(query),
    listAllFeedback: (query) => feedback.list(query),

    listModels: (query) => registry.listModels(query),
    getModel: ({ id }) => registry.getModel(id),
    createModel: (payload) => registry.createModel(payload),
    updateModel: ({ changes, id }) => registry.updateModel(id, changes),
    deleteModel: ({ id }) => registry.deleteModel(id),
    startModel: ({ id }) => registry.start(id),
    stopModel: ({ id }) => registry.stop(id),
    createProvider: (payload) => registry.createProvider(payload),
    listProviders: () => registry.listProviders,
    getProvider: ({ id }) => registry.getProvider(id),
    updateProvider: ({ changes, id }) => registry.updateProvider(id, changes),
    deleteProvider: ({ id }) => registry.deleteProvider(id),
    providerHealth: ({ id }) => registry.health(id),
    syncProvider: ({ id }) => registry.sync(id),
    pullModel: ({ id, name }) => registry.pull(id, name),
    listModelConfigs: () => registry.listConfigs,
    createModelConfig: (payload) => registry.createConfig(payload),
    getModelConfig: ({ id }) => registry.getConfig(id),
    updateModelConfig: ({ changes, id }) => registry.updateConfig(id, changes),
    deleteModelConfig: ({ id }) => registry.deleteConfig(id),

    exportPersonalData: () => users.exportData,
    updateAccount: (payload) => users.updateAccount(payload),
    deleteAccount: (payload) => users.deleteAccount(payload),
    getConsent: () => users.getConsent,
    updateConsent: (payload) => users.updateConsent(payload),
    apiKeyUsage: ({ id }) => gateway.keyUsage(id),
    myUsage: (query) => gateway.myUsage(query),
    myBudget: () => gateway.myBudget,
    listUsers: (page) => users.listUsers(page),
    createUser: (payload) => auth.createUser(payload),
    deleteUser: ({ id }) => users.deleteUser(id),
    resetPassword: ({ id, password }) => users.resetPassword(id, { password }),
    setRole: ({ id, role }) => users.setRole(id, role),
    disableUser: ({ id }) => users.setDisabled(id, true),
    enableUser: ({ id }) => users.setDisabled(id, false),
    listRoles: () => users.listRoles,
    createRole: (payload) => users.createRole(payload),
    updateRole: ({ name, ...changes }) => users.updateRole(name, changes),
    deleteRole: ({ name }) => users.deleteRole(name),
    listAuditEvents: ({ cursor, limit, ...filter }) =>
      audit.list(filter, { ...(limit ? { limit } : {}), ...(cursor ? { cursor } : {}) }),
    usageReport: (query) => gateway.usageReport(query),

    filesUsage: () => files.usage,
    listFiles: (page) => files.list(page),
    getFile: ({ id }) => files.get(id),
    filePassages: ({ id, ...query }) => files.similarPassages(id, query),
    deleteFile: ({ id }) => files.remove(id),
    requestAnalysis: ({ analysis, id }) => files.requestAnalysis(id, analysis),
    listAnalyses: ({ id }) => files.listAnalyses(id),
    getAnalysis: ({ analysisId, id }) => files.getAnalysis(id, analysisId),
    requestExtraction: (payload) => graph.requestExtraction(payload),
    listExtractions: (page) => graph.listExtractions(page),
    getExtraction: ({ id }) => graph.getExtraction(id),
    searchEntities: (query) => graph.searchEntities(query),
    similarEntities: (query) => graph.similarEntities(query),
    getEntity: ({ id }) => graph.getEntity(id),
    deleteEntity: ({ id }) => graph.deleteEntity(id),
    createShare: (payload) => shares.create(payload),
    listShares: (query) => shares.list(query),
    shareStats: () => shares.stats,
    getShare: ({ id }) => shares.get(id),
    updateShare: ({ changes, id }) => shares.update(id, changes),
    revokeShare: ({ id }) => shares.revoke(id),

    chat: ({ id, message }) => eventsOf(engine.chat(id, message)),
    newChat: (payload) => eventsOf(engine.newChat(payload)),
    threadChat: ({ id, message, threadId }) => eventsOf(engine.threadChat(id, threadId, message)),
    regenerate: ({ choice, id, messageId }) => eventsOf(engine.regenerate(id, messageId, choice)),
    continueChat: ({ choice, id }) => eventsOf(engine.continueChat(id, choice)),
    cancelAnswer: ({ id, messageId }) => engine.cancel(id, messageId),
    resumeAnswer: ({ after, id, messageId }) => oneByOne(engine.resume(id, messageId, after ?? 0))
  }
}))

/** The RPC endpoints, added to the REST API's router (so they share its server and middleware). */
export const RpcLive = Layer.mergeAll(
  RpcServer.layer(WebPlusRpcs, { disableFatalDefects: true }).pipe(
    Layer.provide(RpcServer.layerProtocolHttp({ path: rpcPath, routerTag: HttpApiBuilder.Router })),
    Layer.provide(RpcSerialization.layerNdjson)
  ),
  RpcServer.layer(WebPlusRpcs, { disableFatalDefects: true }).pipe(
    Layer.provide(RpcServer.layerProtocolWebsocket({ path: rpcPath, routerTag: HttpApiBuilder.Router })),
    Layer.provide(RpcSerialization.layerJson)
  )
).pipe(Layer.provide([HandlersLive, RpcAuthenticationLive, RpcClientContextLive]))
