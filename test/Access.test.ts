/**
 * Who may do what: every protected endpoint against every kind of caller,
 * user administration, and the audit trail that records it all.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { WebPlusApi } from "../src/Api.js"
import { generateUuid } from "../src/Domain/Ids.js"
import { call, createKey, expectStatus, signIn, signUp, type TestUser } from "./fixtures/Auth.js"
import { uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { conversationDocument, exportFile } from "./fixtures/Documents.js"
import { type FakeProvider, fakeProvider } from "./fixtures/Providers.js"
import { inServerDatabase, type TestServer, testServer } from "./fixtures/Server.js"

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE"

/** The body of `reply`, once its status is the expected one (else the body explains why not). */

const setRole = (admin: TestUser, userId: string, role: string) =>
  call("PUT", `/api/v1/admin/users/${userId}/role`, { auth: admin.accessToken, body: { role } })

const disable = (admin: TestUser, userId: string) =>
  call("POST", `/api/v1/admin/users/${userId}/disable`, { auth: admin.accessToken })

const enable = (admin: TestUser, userId: string) =>
  call("POST", `/api/v1/admin/users/${userId}/enable`, { auth: admin.accessToken })

const me = (credential: string) => call("GET", "/api/v1/auth/me", { auth: credential })

const query = (params: Record<string, string | number | undefined>) => {
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) if (value !== undefined) search.set(name, String(value))
  return search.size > 0 ? `?${search}` : ""
}

/** Sets a user's role straight in the server's database: the repair when no admin is left to do it. */
const forceRole = (userId: string, role: string) =>
  inServerDatabase(Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`UPDATE users SET role_id = (SELECT id FROM roles WHERE name = ${role}) WHERE id = ${userId}`
  ))

/** Demotes every admin but `admin`, so that it is the last one. */
const makeLastAdmin = (admin: TestUser) =>
  Effect.gen(function*() {
    const users = expectStatus(yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken }), 200)
    expect(users.nextCursor).toBeNull()
    for (const user of users.items) {
      if (user.role === "admin" && user.id !== admin.id) expectStatus(yield* setRole(admin, user.id, "user"), 200)
    }
  })

/** Every page of a paginated admin list, following `nextCursor` to the end. */
const everyPage = (
  path: string,
  auth: string,
  params: Record<string, string | number | undefined>
) =>
  Effect.gen(function*() {
    const pages: Array<Array<any>> = []
    let cursor: string | undefined
    do {
      const body = expectStatus(yield* call("GET", `${path}${query({ ...params, cursor })}`, { auth }), 200)
      pages.push(body.items)
      cursor = body.nextCursor ?? undefined
    } while (cursor !== undefined && pages.length < 100)
    return pages
  })

// --- the cast

/**
 * The people every access test uses: the admin (the first user of the
 * server), a plain user who owns keys, another plain user, and a plain user
 * the admin endpoints act on.
 */
interface Cast {
  readonly admin: TestUser
  readonly owner: TestUser
  readonly other: TestUser
  /** An API key of the owner limited to `models:read`. */
  readonly scopedKey: string
  /** An API key of the owner: the object the key endpoints act on. */
  readonly ownerKeyId: string
  /** A plain user, the object the admin endpoints act on. */
  readonly target: TestUser
  /** The owner's conversation, with one message and a thread on it: the objects the conversation endpoints act on. */
  readonly conversation: {
    readonly id: string
    readonly messageId: string
    readonly threadId: string
    /** The model's answer to the message. */
    readonly answerId: string
  }
  /** A provider (the loopback Ollama) and one of its models, registered by the admin. */
  readonly providerId: string
  readonly modelId: string
  /** A personal preset of the owner. */
  readonly ownerConfigId: string
  /** The owner's file, an analysis of it, an extraction of the conversation, and an entity of the owner's graph. */
  readonly fileId: string
  readonly analysisId: string
  readonly extractionId: string
  readonly entityId: string
  /** A share of the owner's conversation. */
  readonly shareId: string
}

/** The loopback Ollama the cast's providers point at. */
class Ollama extends Context.Tag("test/Access/Ollama")<Ollama, FakeProvider>() {}

const matrixModel = "matrix-model:1b"

const unique = () => Math.random().toString(36).slice(2)

class TheCast extends Context.Tag("test/Access/Cast")<TheCast, Cast>() {}

/** A cast; `promotedBy` makes its admin a new user promoted by that admin (for a server that has one already). */
const makeCast = (promotedBy?: TestUser) =>
  Effect.gen(function*() {
    const first = yield* signUp()
    const admin = promotedBy ? { ...first, role: "admin" } : first
    if (promotedBy) expectStatus(yield* setRole(promotedBy, first.id, "admin"), 200)
    expect(admin.role).toBe("admin")
    const [owner, other, target] = yield* Effect.all([signUp(), signUp(), signUp()], { concurrency: "unbounded" })
    const scoped = yield* createKey(owner, ["models:read"])
    const ownerKey = yield* createKey(owner, ["models:read", "keys:manage"])
    const auth = owner.accessToken
    const conversation = expectStatus(
      yield* call("POST", "/api/v1/conversations", { auth, body: { title: "The owner's" } }),
      201
    )
    const message = expectStatus(
      yield* call("POST", `/api/v1/conversations/${conversation.id}/messages`, { auth, body: { content: "Hi" } }),
      201
    )
    const thread = expectStatus(
      yield* call("POST", `/api/v1/conversations/${conversation.id}/threads`, {
        auth,
        body: { messageId: message.id }
      }),
      201
    )
    const ollama = yield* Ollama
    const provider = expectStatus(
      yield* call("POST", "/api/v1/providers", {
        auth: admin.accessToken,
        body: { name: `matrix-${unique()}`, kind: "ollama", baseUrl: ollama.url, connectTimeoutMs: 2_000 }
      }),
      201
    )
    const synced = expectStatus(
      yield* call("POST", `/api/v1/providers/${provider.id}/sync`, { auth: admin.accessToken }),
      200
    )
    const config = expectStatus(
      yield* call("POST", "/api/v1/model-configs", { auth: owner.accessToken, body: { name: `preset-${unique()}` } }),
      201
    )
    const answered = expectStatus(
      yield* call("POST", `/api/v1/conversations/${conversation.id}/continue`, {
        auth,
        body: { parentId: message.id, modelId: synced.models[0].id }
      }),
      200
    )
    // The owner's rating of the answer: the object taking it back acts on.
    expectStatus(
      yield* call("PUT", `/api/v1/conversations/${conversation.id}/messages/${answered.answer.id}/feedback`, {
        auth,
        body: { rating: "up" }
      }),
      200
    )
    const file = yield* uploadOne(auth, "notes.txt", "The owner's notes.")
    const analysis = expectStatus(
      yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth, body: { modelId: synced.models[0].id } }),
      202
    )
    const extraction = expectStatus(
      yield* call("POST", "/api/v1/graph/extractions", {
        auth,
        body: { conversationId: conversation.id, modelId: synced.models[0].id }
      }),
      202
    )
    const share = expectStatus(
      yield* call("POST", "/api/v1/shares", { auth, body: { conversationId: conversation.id } }),
      201
    )
    const entityId = yield* generateUuid
    yield* inServerDatabase(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`INSERT INTO graph_entities ${
        sql.insert({
          id: entityId,
          userId: owner.id,
          name: "Matrix",
          normalizedName: "matrix",
          type: "concept",
          confidence: 1,
          mentionCount: 1
        })
      }`.pipe(
        Effect.zipRight(
          sql`INSERT INTO graph_mentions ${
            sql.insert({ entityId, sourceKind: "file", sourceId: file.id, confidence: 1 })
          }`
        )
      )))
    return {
      admin,
      owner,
      other,
      target,
      fileId: file.id,
      analysisId: analysis.id,
      extractionId: extraction.id,
      entityId,
      shareId: share.id,
      scopedKey: scoped.secret,
      ownerKeyId: ownerKey.id,
      conversation: { id: conversation.id, messageId: message.id, threadId: thread.id, answerId: answered.answer.id },
      providerId: provider.id,
      modelId: synced.models[0].id,
      ownerConfigId: config.id
    } satisfies Cast
  })

// --- the access matrix

/** No credentials; a plain user on their own objects; another plain user on those; the admin; the owner's key scoped to `models:read`. */
type ActorName = "anonymous" | "owner" | "other" | "admin" | "scopedKey"

/** The order cells run in: the owner last, since what it does to itself may end its scoped key's access. */
const runOrder: ReadonlyArray<ActorName> = ["anonymous", "scopedKey", "other", "admin", "owner"]

const credentialOf = (cast: Cast, actor: ActorName): string | undefined =>
  actor === "anonymous" ? undefined : actor === "scopedKey" ? cast.scopedKey : cast[actor].accessToken

/** The person behind the credential (the scoped key is the owner's; anonymous callers claim to be the owner). */
const personOf = (cast: Cast, actor: ActorName): TestUser =>
  actor === "other" || actor === "admin" ? cast[actor] : cast.owner

type Statuses = Readonly<Record<ActorName, number>>

/** Any signed-in caller, API keys included. */
const anyone = (status: number): Statuses => ({
  anonymous: 401,
  owner: status,
  other: status,
  admin: status,
  scopedKey: status
})
/** A password session, or a key with `keys:manage` (the scoped key has only `models:read`). */
const keysManage = (status: number): Statuses => ({ ...anyone(status), scopedKey: 403 })
/** A password session only: what touches the account itself is not for API keys. */
const sessionOnly = (status: number): Statuses => ({ ...anyone(status), scopedKey: 403 })
/** The admin only. */
const adminOnly = (status: number): Statuses => ({ ...anyone(403), anonymous: 401, admin: status })
/** Conversation endpoints: anyone with the conversation permissions (the scoped key has only `models:read`). */
const conversationsUse = (status: number): Statuses => ({ ...anyone(status), scopedKey: 403 })
/** The owner's conversation: not found for anyone else, admins included (its existence is not revealed). */
const ownConversation = (status: number): Statuses => ({ ...conversationsUse(404), owner: status })

const inConversation = (extra: Record<string, string> = {}) => (cast: Cast): CellRequest => ({
  params: { id: cast.conversation.id, ...extra }
})
const onMessage = (cast: Cast) => inConversation({ messageId: cast.conversation.messageId })(cast)
const onAnswer = (cast: Cast) => inConversation({ messageId: cast.conversation.answerId })(cast)
const onThread = (cast: Cast) => inConversation({ threadId: cast.conversation.threadId })(cast)
/** The owner's file (and graph): not found for anyone else, admins included. */
const ownFile = ownConversation
const onFile = (cast: Cast): CellRequest => ({ params: { id: cast.fileId } })

interface CellRequest {
  readonly params?: Readonly<Record<string, string>>
  readonly query?: Readonly<Record<string, string>>
  readonly body?: unknown
}

interface Expectation {
  readonly statuses: Statuses
  /** Path parameters and a valid body, so that only authorization decides the status. */
  readonly request?: (cast: Cast, actor: ActorName) => CellRequest
  /** What the call does to the caller (ends its session, changes its password, erases it): each row gets a fresh cast. */
  readonly throwaway?: boolean
}

/** Every endpoint anyone may call without credentials. */
const publicEndpoints = new Set([
  "auth.register",
  "auth.login",
  "auth.refresh",
  // Single sign-on: the browser's way in and the exchange of its one-time code (test/Oidc.test.ts).
  "oidc.info",
  "oidc.login",
  "oidc.callback",
  "oidc.token",
  "publicShares.viewShare",
  "publicShares.reactToShare"
])

/** The expected status of every protected endpoint, for each kind of caller. */
const expectations: Readonly<Record<string, Expectation>> = {
  "auth.logout": { statuses: sessionOnly(204), throwaway: true },
  "auth.me": { statuses: anyone(200) },
  "auth.changePassword": {
    statuses: sessionOnly(204),
    throwaway: true,
    request: (cast, actor) => ({
      body: { currentPassword: personOf(cast, actor).password, newPassword: "a completely new passphrase" }
    })
  },
  "auth.createApiKey": {
    statuses: keysManage(201),
    request: () => ({ body: { name: "matrix key", scopes: ["models:read"] } })
  },
  "auth.listApiKeys": { statuses: keysManage(200) },
  "auth.revokeApiKey": {
    // Another user's key is simply not found, whoever asks: its existence is not revealed.
    statuses: { anonymous: 401, owner: 204, other: 404, admin: 404, scopedKey: 403 },
    request: (cast) => ({ params: { id: cast.ownerKeyId } })
  },
  "admin.listUsers": { statuses: adminOnly(200) },
  "admin.setRole": {
    statuses: adminOnly(200),
    request: (cast) => ({ params: { id: cast.target.id }, body: { role: "user" } })
  },
  "admin.createUser": {
    statuses: adminOnly(201),
    request: () => ({
      body: { email: `created-${unique()}@example.com`, username: `created_${unique()}`, password: "a long passphrase" }
    })
  },
  "admin.deleteUser": {
    statuses: adminOnly(204),
    throwaway: true,
    request: (cast) => ({ params: { id: cast.target.id } })
  },
  "admin.resetPassword": {
    statuses: adminOnly(204),
    request: (cast) => ({ params: { id: cast.target.id }, body: { password: "a reset passphrase" } })
  },
  "admin.listRoles": { statuses: adminOnly(200) },
  "admin.createRole": {
    statuses: adminOnly(201),
    request: () => ({ body: { name: `role-${unique()}`, permissions: ["models:read"] } })
  },
  "admin.updateRole": {
    statuses: { ...adminOnly(404) },
    request: () => ({ params: { name: "no-such-role" }, body: { description: "changed" } })
  },
  "admin.deleteRole": {
    statuses: { ...adminOnly(404) },
    request: () => ({ params: { name: "no-such-role" } })
  },
  "admin.disableUser": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.target.id } }) },
  "admin.enableUser": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.target.id } }) },
  "admin.listAuditEvents": { statuses: adminOnly(200) },
  "me.export": { statuses: sessionOnly(200) },
  "me.deleteAccount": {
    // The cast's admin is a second admin, so erasing itself is allowed.
    statuses: sessionOnly(204),
    throwaway: true,
    request: (cast, actor) => ({ body: { password: personOf(cast, actor).password } })
  },
  "me.updateAccount": {
    statuses: sessionOnly(200),
    request: (cast, actor) => ({ body: { password: personOf(cast, actor).password, username: `renamed_${unique()}` } })
  },
  "me.getConsent": { statuses: sessionOnly(200) },
  "me.updateConsent": { statuses: sessionOnly(200), request: () => ({ body: { marketingConsent: false } }) },
  "conversations.createConversation": { statuses: conversationsUse(201), request: () => ({ body: {} }) },
  "conversations.listConversations": { statuses: conversationsUse(200) },
  "conversations.importConversation": {
    statuses: conversationsUse(201),
    request: () => ({
      body: conversationDocument({ title: "Imported", messages: [], currentLeafId: null, at: new Date().toISOString() })
    })
  },
  "conversations.importOpenWebUi": {
    statuses: conversationsUse(201),
    request: () => ({ body: exportFile("open-webui-chats.json") })
  },
  "conversations.importChatGpt": {
    statuses: conversationsUse(201),
    request: () => ({ body: exportFile("chatgpt-conversations.json") })
  },
  "conversations.getConversation": { statuses: ownConversation(200), request: inConversation() },
  "conversations.updateConversation": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...inConversation()(cast), body: { title: "Renamed" } })
  },
  "conversations.deleteConversation": { statuses: ownConversation(204), request: inConversation(), throwaway: true },
  "conversations.restoreConversation": { statuses: ownConversation(200), request: inConversation() },
  "conversations.purgeConversation": { statuses: ownConversation(204), request: inConversation(), throwaway: true },
  "conversations.exportConversation": { statuses: ownConversation(200), request: inConversation() },
  "conversations.exportConversationMarkdown": { statuses: ownConversation(200), request: inConversation() },
  "conversations.listMessages": { statuses: ownConversation(200), request: inConversation() },
  "conversations.appendMessage": {
    statuses: ownConversation(201),
    request: (cast) => ({ ...inConversation()(cast), body: { content: "More" } })
  },
  "conversations.getMessage": { statuses: ownConversation(200), request: onMessage },
  "conversations.editMessage": {
    statuses: ownConversation(201),
    request: (cast) => ({ ...onMessage(cast), body: { content: "Hello" } })
  },
  "conversations.deleteMessage": { statuses: ownConversation(204), request: onMessage, throwaway: true },
  "conversations.setCurrentLeaf": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...inConversation()(cast), body: { messageId: cast.conversation.messageId } })
  },
  "conversations.createThread": {
    statuses: ownConversation(201),
    request: (cast) => ({ ...inConversation()(cast), body: { messageId: cast.conversation.messageId } })
  },
  "conversations.listThreads": { statuses: ownConversation(200), request: inConversation() },
  "conversations.updateThread": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...onThread(cast), body: { title: "Aside" } })
  },
  "conversations.deleteThread": { statuses: ownConversation(204), request: onThread, throwaway: true },
  "conversations.listThreadMessages": { statuses: ownConversation(200), request: onThread },
  "conversations.appendThreadMessage": {
    statuses: ownConversation(201),
    request: (cast) => ({ ...onThread(cast), body: { content: "On the side" } })
  },
  "conversations.search": { statuses: conversationsUse(200), request: () => ({ query: { q: "hi" } }) },
  "chat.chat": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...inConversation()(cast), body: { content: "Hello", modelId: cast.modelId } })
  },
  "chat.newChat": {
    statuses: conversationsUse(200),
    request: (cast) => ({ body: { content: "Hello", modelId: cast.modelId } })
  },
  "chat.threadChat": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...onThread(cast), body: { content: "Hello", modelId: cast.modelId } })
  },
  "chat.regenerate": { statuses: ownConversation(200), request: (cast) => ({ ...onAnswer(cast), body: {} }) },
  "chat.continueChat": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...inConversation()(cast), body: { parentId: cast.conversation.messageId } })
  },
  "chat.cancelAnswer": { statuses: ownConversation(200), request: onAnswer },
  "chat.resumeAnswer": { statuses: ownConversation(200), request: onAnswer },
  // The path names the owner: anyone else is refused, whatever they may do.
  "chat.simpleChat": {
    statuses: { anonymous: 401, owner: 200, other: 403, admin: 403, scopedKey: 403 },
    request: (cast) => ({ params: { userId: cast.owner.id }, body: { message: "Hello" } })
  },
  "providers.createProvider": {
    statuses: adminOnly(201),
    request: () => ({ body: { name: `matrix-${unique()}`, kind: "ollama", baseUrl: "http://127.0.0.1:9" } })
  },
  "providers.listProviders": { statuses: adminOnly(200) },
  "providers.getProvider": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.providerId } }) },
  "providers.updateProvider": {
    statuses: adminOnly(200),
    request: (cast) => ({ params: { id: cast.providerId }, body: { enabled: true } })
  },
  "providers.deleteProvider": {
    statuses: adminOnly(204),
    throwaway: true,
    request: (cast) => ({ params: { id: cast.providerId } })
  },
  "providers.providerHealth": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.providerId } }) },
  "providers.syncProvider": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.providerId } }) },
  "providers.pullModel": {
    statuses: adminOnly(202),
    request: (cast) => ({ params: { id: cast.providerId }, body: { name: `pulled-${unique()}` } })
  },
  "models.listModels": { statuses: anyone(200) },
  "models.getModel": { statuses: anyone(200), request: (cast) => ({ params: { id: cast.modelId } }) },
  "models.createModel": {
    statuses: adminOnly(201),
    request: (cast) => ({ body: { providerId: cast.providerId, providerModel: `hand-${unique()}` } })
  },
  "models.updateModel": {
    statuses: adminOnly(200),
    request: (cast) => ({ params: { id: cast.modelId }, body: { displayName: "Matrix model" } })
  },
  "models.deleteModel": {
    statuses: adminOnly(204),
    throwaway: true,
    request: (cast) => ({ params: { id: cast.modelId } })
  },
  "models.startModel": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.modelId } }) },
  "models.stopModel": { statuses: adminOnly(200), request: (cast) => ({ params: { id: cast.modelId } }) },
  "modelConfigs.listModelConfigs": { statuses: anyone(200) },
  "modelConfigs.createModelConfig": {
    // Personal presets need `models:use`, which the scoped key lacks.
    statuses: { ...anyone(201), scopedKey: 403 },
    request: () => ({ body: { name: `preset-${unique()}`, temperature: 0.5 } })
  },
  // Another user's preset is not found, admins included; the owner's key may read it but not change it.
  "modelConfigs.getModelConfig": {
    statuses: { anonymous: 401, owner: 200, other: 404, admin: 404, scopedKey: 200 },
    request: (cast) => ({ params: { id: cast.ownerConfigId } })
  },
  "modelConfigs.updateModelConfig": {
    statuses: { anonymous: 401, owner: 200, other: 404, admin: 404, scopedKey: 403 },
    request: (cast) => ({ params: { id: cast.ownerConfigId }, body: { topP: 0.9 } })
  },
  "modelConfigs.deleteModelConfig": {
    statuses: { anonymous: 401, owner: 204, other: 404, admin: 404, scopedKey: 403 },
    request: (cast) => ({ params: { id: cast.ownerConfigId } })
  },
  // Authorized callers get as far as reading the body, which is not multipart here (the upload itself
  // is tested in Files.test.ts).
  "files.uploadFile": { statuses: conversationsUse(422) },
  "files.listFiles": { statuses: conversationsUse(200) },
  "files.filesUsage": { statuses: conversationsUse(200) },
  "files.getFile": { statuses: ownFile(200), request: onFile },
  "files.downloadFile": { statuses: ownFile(200), request: onFile },
  // Retrieval is off on this server (no EMBEDDING_MODEL): 404 for the owner too.
  "files.filePassages": { statuses: ownFile(404), request: (cast) => ({ ...onFile(cast), query: { q: "notes" } }) },
  "files.deleteFile": { statuses: ownFile(204), request: onFile, throwaway: true },
  "files.requestAnalysis": {
    statuses: ownFile(202),
    request: (cast) => ({ ...onFile(cast), body: { modelId: cast.modelId } })
  },
  "files.listAnalyses": { statuses: ownFile(200), request: onFile },
  "files.getAnalysis": {
    statuses: ownFile(200),
    request: (cast) => ({ params: { id: cast.fileId, analysisId: cast.analysisId } })
  },
  "graph.requestExtraction": {
    statuses: ownConversation(202),
    request: (cast) => ({ body: { conversationId: cast.conversation.id, modelId: cast.modelId } })
  },
  "graph.getExtraction": { statuses: ownConversation(200), request: (cast) => ({ params: { id: cast.extractionId } }) },
  "graph.searchEntities": { statuses: conversationsUse(200) },
  // Semantic search is off on this server (no EMBEDDING_MODEL): 404 for whoever may read conversations.
  "graph.similarEntities": { statuses: conversationsUse(404), request: () => ({ query: { q: "notes" } }) },
  "graph.listExtractions": { statuses: conversationsUse(200) },
  "graph.getEntity": { statuses: ownConversation(200), request: (cast) => ({ params: { id: cast.entityId } }) },
  "graph.deleteEntity": {
    statuses: ownConversation(204),
    throwaway: true,
    request: (cast) => ({ params: { id: cast.entityId } })
  },
  "shares.createShare": {
    statuses: ownConversation(201),
    request: (cast) => ({ body: { conversationId: cast.conversation.id } })
  },
  "shares.listShares": { statuses: conversationsUse(200) },
  "shares.shareStats": { statuses: conversationsUse(200) },
  "shares.getShare": { statuses: ownConversation(200), request: (cast) => ({ params: { id: cast.shareId } }) },
  "shares.updateShare": {
    statuses: ownConversation(200),
    request: (cast) => ({ params: { id: cast.shareId }, body: { description: "Seen by the matrix" } })
  },
  "shares.revokeShare": {
    statuses: ownConversation(204),
    throwaway: true,
    request: (cast) => ({ params: { id: cast.shareId } })
  },
  "feedback.setFeedback": {
    statuses: ownConversation(200),
    request: (cast) => ({ ...onAnswer(cast), body: { rating: "down", reasons: ["incomplete"] } })
  },
  "feedback.deleteFeedback": { statuses: ownConversation(204), throwaway: true, request: onAnswer },
  "feedback.listFeedback": { statuses: ownConversation(200), request: inConversation() },
  // Like the usage report: for those who administer users.
  "feedback.feedbackSummary": { statuses: adminOnly(200) },
  "feedback.listAllFeedback": { statuses: adminOnly(200) },
  "usage.apiKeyUsage": {
    // Like the key itself: the owner's (a session, or a key with `keys:manage`), not found for anyone else.
    statuses: { anonymous: 401, owner: 200, other: 404, admin: 404, scopedKey: 403 },
    request: (cast) => ({ params: { id: cast.ownerKeyId } })
  },
  // Like the per-key report: a session, or a key with `keys:manage`; each caller's own usage.
  "usage.myUsage": { statuses: keysManage(200) },
  // Anyone's own budget: it says what their next answer meets.
  "usage.myBudget": { statuses: anyone(200) },
  "usage.usageReport": { statuses: adminOnly(200) }
}

interface Endpoint {
  readonly id: string
  readonly method: Method
  readonly path: string
}

/** Every endpoint of the API that needs credentials, read from the API definition itself. */
const protectedEndpoints: ReadonlyArray<Endpoint> = Object.values(WebPlusApi.groups).flatMap((group) =>
  Object.values(group.endpoints).map((endpoint) => ({
    id: `${group.identifier}.${endpoint.name}`,
    method: endpoint.method as Method,
    path: endpoint.path
  }))
).filter(({ id }) => !id.startsWith("health.") && !publicEndpoints.has(id))

const errorTags: Readonly<Record<number, string>> = {
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  422: "ValidationError"
}

const send = (endpoint: Endpoint, credential: string | undefined, request: CellRequest) => {
  const path = endpoint.path.replace(/:(\w+)/g, (_, name: string) => {
    const value = request.params?.[name]
    if (value === undefined) throw new Error(`${endpoint.id}: no value for the path parameter ${name}`)
    return encodeURIComponent(value)
  })
  return call(endpoint.method, `${path}${query(request.query ?? {})}`, {
    ...(credential !== undefined ? { auth: credential } : {}),
    ...(request.body !== undefined ? { body: request.body } : {})
  })
}

// --- the audit story

/** An audit event as the admin list shows it, recorded from the test client's address. */
const event = (action: string, actorId: string, targetType: string, targetId?: string) =>
  expect.objectContaining({
    action,
    actorId,
    targetType,
    ...(targetId ? { targetId } : {}),
    ipAddress: expect.any(String)
  })

interface Story {
  readonly alice: TestUser
  readonly keyId: string
  /** A time after Alice's own actions and the role changes, before she is disabled and enabled. */
  readonly beforeDisable: string
}

class AuditStory extends Context.Tag("test/Access/AuditStory")<AuditStory, Story>() {}

/** Alice signs up, fails a login, makes and revokes a key, changes her password and signs out; the admin promotes, demotes, disables and enables her. */
const auditStory: Effect.Effect<Story, never, TestServer | TheCast> = Effect.gen(function*() {
  const { admin } = yield* TheCast
  const alice = yield* signUp()
  const wrong = yield* call("POST", "/api/v1/auth/login", {
    body: { login: alice.email, password: "not her password" }
  })
  expectStatus(wrong, 401)
  const key = yield* createKey(alice, ["models:read"])
  expectStatus(yield* call("DELETE", `/api/v1/auth/api-keys/${key.id}`, { auth: alice.accessToken }), 204)
  const password = { currentPassword: alice.password, newPassword: "alice's new passphrase" }
  expectStatus(yield* call("POST", "/api/v1/auth/password", { auth: alice.accessToken, body: password }), 204)
  expectStatus(yield* call("POST", "/api/v1/auth/logout", { auth: alice.accessToken }), 204)
  expectStatus(yield* setRole(admin, alice.id, "admin"), 200)
  expectStatus(yield* setRole(admin, alice.id, "user"), 200)
  yield* Effect.sleep("20 millis")
  const beforeDisable = new Date().toISOString()
  yield* Effect.sleep("20 millis")
  expectStatus(yield* disable(admin, alice.id), 200)
  expectStatus(yield* enable(admin, alice.id), 200)
  return { alice, keyId: key.id, beforeDisable }
})

for (const dialect of dialects) {
  layer(
    Layer.effect(TheCast, makeCast()).pipe(
      Layer.provideMerge(testServer({ dialect })),
      Layer.provideMerge(Layer.scoped(Ollama, fakeProvider("ollama", [{ name: matrixModel }])))
    ),
    {
      excludeTestServices: true
    }
  )(`access on ${dialect}`, (it) => {
    describe("the access matrix", () => {
      it("names every protected endpoint of the API, and nothing else", () => {
        expect(protectedEndpoints.map(({ id }) => id).sort()).toEqual(Object.keys(expectations).sort())
      })

      for (const endpoint of protectedEndpoints) {
        it.effect(`${endpoint.id} (${endpoint.method} ${endpoint.path})`, () =>
          Effect.gen(function*() {
            const expectation = expectations[endpoint.id]
            if (expectation === undefined) {
              return expect.fail(`${endpoint.id} is missing from the expectation table`)
            }
            const shared = yield* TheCast
            const cast = expectation.throwaway ? yield* makeCast(shared.admin) : shared
            const statuses: Record<string, number> = {}
            for (const actor of runOrder) {
              const reply = yield* send(endpoint, credentialOf(cast, actor), expectation.request?.(cast, actor) ?? {})
              statuses[actor] = reply.status
              if (reply.status >= 400) {
                expect(reply.body?._tag, `${endpoint.id} as ${actor}: ${JSON.stringify(reply.body)}`).toBe(
                  errorTags[reply.status]
                )
              }
            }
            expect(statuses).toEqual(expectation.statuses)
          }))
      }

      it.effect("another user's keys are neither listed nor revocable, and stay usable", () =>
        Effect.gen(function*() {
          const { other, owner } = yield* TheCast
          const key = yield* createKey(owner, ["models:read"])
          const listed = expectStatus(yield* call("GET", "/api/v1/auth/api-keys", { auth: other.accessToken }), 200)
          expect(listed.items.map((item: { id: string }) => item.id)).not.toContain(key.id)
          const revoked = yield* call("DELETE", `/api/v1/auth/api-keys/${key.id}`, { auth: other.accessToken })
          expect(revoked).toMatchObject({ status: 404, body: { _tag: "NotFound" } })
          expectStatus(yield* me(key.secret), 200)
        }))

      it.effect("an admin's key is limited to its scopes: no admin scope, no admin endpoint", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const narrow = yield* createKey(admin, ["models:read"])
          const wide = yield* createKey(admin, ["admin:users", "admin:audit"])
          for (const path of ["/api/v1/admin/users", "/api/v1/admin/audit-events"]) {
            expect((yield* call("GET", path, { auth: narrow.secret })).status).toBe(403)
            // The X-API-Key header is the same credential.
            expect((yield* call("GET", path, { headers: { "x-api-key": narrow.secret } })).status).toBe(403)
            expect((yield* call("GET", path, { auth: wide.secret })).status).toBe(200)
            expect((yield* call("GET", path, { headers: { "x-api-key": wide.secret } })).status).toBe(200)
          }
        }))
    })

    describe("user administration", () => {
      it.effect("lists users page by page: limit=2, following nextCursor, each user once", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const pages = yield* everyPage("/api/v1/admin/users", admin.accessToken, { limit: 2 })
          const ids = pages.flat().map((user: { id: string }) => user.id)
          expect(pages.length).toBeGreaterThan(2)
          for (const page of pages.slice(0, -1)) expect(page).toHaveLength(2)
          expect(new Set(ids).size).toBe(ids.length)
          const all = expectStatus(
            yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken }),
            200
          )
          expect(all.nextCursor).toBeNull()
          expect(ids).toEqual(all.items.map((user: { id: string }) => user.id))
        }))

      it.effect("a cursor the server did not issue is refused with 422", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const forged = Buffer.from("{\"nope\":1}").toString("base64url")
          for (const cursor of ["garbage", forged]) {
            const reply = yield* call("GET", `/api/v1/admin/users?limit=2&cursor=${cursor}`, {
              auth: admin.accessToken
            })
            expect(reply).toMatchObject({ status: 422, body: { _tag: "ValidationError" } })
          }
        }))

      it.effect("promoting a user to admin lets them list users at once; demoting takes it back", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const user = yield* signUp()
          expect((yield* call("GET", "/api/v1/admin/users", { auth: user.accessToken })).status).toBe(403)
          expect(expectStatus(yield* setRole(admin, user.id, "admin"), 200)).toMatchObject({
            id: user.id,
            role: "admin"
          })
          expect((yield* call("GET", "/api/v1/admin/users", { auth: user.accessToken })).status).toBe(200)
          expect(expectStatus(yield* setRole(admin, user.id, "user"), 200)).toMatchObject({ role: "user" })
          expect((yield* call("GET", "/api/v1/admin/users", { auth: user.accessToken })).status).toBe(403)
        }))

      it.effect("an unknown role is a 422; an unknown user is a 404", () =>
        Effect.gen(function*() {
          const { admin, target } = yield* TheCast
          const unknownRole = yield* setRole(admin, target.id, "superuser")
          expect(unknownRole).toMatchObject({ status: 422, body: { _tag: "ValidationError" } })
          const nobody = yield* generateUuid
          for (
            const reply of [
              yield* setRole(admin, nobody, "user"),
              yield* disable(admin, nobody),
              yield* enable(admin, nobody)
            ]
          ) {
            expect(reply).toMatchObject({ status: 404, body: { _tag: "NotFound" } })
          }
        }))

      it.effect("the last admin can be neither demoted nor disabled (409)", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          // Other tests promote users; make the cast's admin the only one left.
          const users = expectStatus(
            yield* call("GET", "/api/v1/admin/users?limit=100", { auth: admin.accessToken }),
            200
          )
          for (const user of users.items) {
            if (user.role === "admin" && user.id !== admin.id) expectStatus(yield* setRole(admin, user.id, "user"), 200)
          }
          expect(yield* setRole(admin, admin.id, "user")).toMatchObject({ status: 409, body: { _tag: "Conflict" } })
          expect(yield* disable(admin, admin.id)).toMatchObject({ status: 409, body: { _tag: "Conflict" } })
          expect(expectStatus(yield* me(admin.accessToken), 200)).toMatchObject({ role: "admin", disabled: false })
        }))

      it.effect("two admins demoting each other at the same moment leave one admin (five tries)", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          yield* makeLastAdmin(admin)
          const adminsLeft: Array<number> = []
          for (let round = 0; round < 5; round++) {
            const second = yield* signUp()
            expectStatus(yield* setRole(admin, second.id, "admin"), 200)
            yield* Effect.all([setRole(second, admin.id, "user"), setRole(admin, second.id, "user")], {
              concurrency: "unbounded"
            })
            const roles = yield* Effect.all([me(admin.accessToken), me(second.accessToken)])
            adminsLeft.push(roles.filter((reply) => reply.body.role === "admin").length)
            // Back to one admin, the cast's, whatever happened.
            yield* forceRole(admin.id, "admin")
            yield* forceRole(second.id, "user")
          }
          expect(adminsLeft).toEqual([1, 1, 1, 1, 1])
        }))

      it.effect("disabling ends a user's token and key on the next request; enabling lets them sign in again", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const user = yield* signUp()
          const key = yield* createKey(user, ["models:read"])
          expectStatus(yield* me(user.accessToken), 200)
          expectStatus(yield* me(key.secret), 200)

          expect(expectStatus(yield* disable(admin, user.id), 200)).toMatchObject({ id: user.id, disabled: true })
          expect((yield* me(user.accessToken)).status).toBe(401)
          expect((yield* me(key.secret)).status).toBe(401)
          const login = { login: user.email, password: user.password }
          expect((yield* call("POST", "/api/v1/auth/login", { body: login })).status).toBe(401)
          const refresh = { refreshToken: user.refreshToken }
          expect((yield* call("POST", "/api/v1/auth/refresh", { body: refresh })).status).toBe(401)

          expect(expectStatus(yield* enable(admin, user.id), 200)).toMatchObject({ id: user.id, disabled: false })
          const fresh = yield* signIn(user.email, user.password)
          expectStatus(yield* me(fresh.accessToken), 200)
          // The sessions that were open when the user was disabled stay ended; API keys work again.
          expect((yield* me(user.accessToken)).status).toBe(401)
          expect((yield* call("POST", "/api/v1/auth/refresh", { body: refresh })).status).toBe(401)
          expectStatus(yield* me(key.secret), 200)
        }))
    })

    it.layer(Layer.effect(AuditStory, auditStory))("the audit trail", (it) => {
      it.effect("records each security action with who did it, to what, and from where", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const { alice, keyId } = yield* AuditStory
          const byAlice = (yield* everyPage("/api/v1/admin/audit-events", admin.accessToken, { actorId: alice.id }))
            .flat()
          const aboutAlice = (yield* everyPage("/api/v1/admin/audit-events", admin.accessToken, { targetId: alice.id }))
            .flat()
          expect(byAlice).toEqual(expect.arrayContaining([
            event("user.registered", alice.id, "user", alice.id),
            event("auth.login.succeeded", alice.id, "session"),
            event("api-key.created", alice.id, "api_key", keyId),
            event("api-key.revoked", alice.id, "api_key", keyId),
            event("auth.password.changed", alice.id, "user", alice.id),
            event("auth.logout", alice.id, "session")
          ]))
          expect(aboutAlice).toEqual(expect.arrayContaining([
            expect.objectContaining({
              action: "auth.login.failed",
              actorType: "anonymous",
              actorId: null,
              targetId: alice.id,
              ipAddress: expect.any(String),
              metadata: { reason: "wrong-password" }
            }),
            expect.objectContaining({
              action: "user.role.changed",
              actorId: admin.id,
              targetId: alice.id,
              ipAddress: expect.any(String),
              metadata: { from: "user", to: "admin" }
            }),
            event("user.disabled", admin.id, "user", alice.id),
            event("user.enabled", admin.id, "user", alice.id)
          ]))
        }))

      it.effect("records what a user publishes, uploads, deletes for good, imports and exports", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const bob = yield* signUp()
          const auth = { auth: bob.accessToken }
          const conversation = expectStatus(
            yield* call("POST", "/api/v1/conversations", { ...auth, body: { title: "Audited" } }),
            201
          )
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${conversation.id}/messages`, {
              ...auth,
              body: { role: "user", content: "hello" }
            }),
            201
          )
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", { ...auth, body: { conversationId: conversation.id } }),
            201
          )
          expectStatus(yield* call("DELETE", `/api/v1/shares/${share.id}`, auth), 204)
          const document = expectStatus(
            yield* call("GET", `/api/v1/conversations/${conversation.id}/export`, auth),
            200
          )
          const imported = expectStatus(
            yield* call("POST", "/api/v1/conversations/import", { ...auth, body: document }),
            201
          )
          expectStatus(yield* call("POST", `/api/v1/conversations/${imported.id}/purge`, auth), 204)
          const file = yield* uploadOne(bob.accessToken, "notes.txt", "some notes")
          expectStatus(yield* call("DELETE", `/api/v1/files/${file.id}`, auth), 204)

          const byBob = (yield* everyPage("/api/v1/admin/audit-events", admin.accessToken, { actorId: bob.id })).flat()
          const recorded = (action: string, targetType: string, targetId: string, metadata?: object) =>
            expect.objectContaining({
              action,
              actorId: bob.id,
              targetType,
              targetId,
              ipAddress: expect.any(String),
              ...(metadata ? { metadata } : {})
            })
          expect(byBob).toEqual(expect.arrayContaining([
            recorded("share.created", "share", share.id, { kind: "conversation", targetId: conversation.id }),
            recorded("share.revoked", "share", share.id),
            recorded("conversation.exported", "conversation", conversation.id, { format: "json" }),
            recorded("conversation.imported", "conversation", imported.id),
            recorded("conversation.purged", "conversation", imported.id),
            recorded("file.uploaded", "file", file.id, { contentType: "text/plain", sizeBytes: 10 }),
            recorded("file.deleted", "file", file.id)
          ]))
          // The link of a share is a secret: the trail does not hold it.
          expect(JSON.stringify(byBob)).not.toContain(share.slug)
        }))

      it.effect("filters by action, actor, target, target type and time", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const { alice, beforeDisable } = yield* AuditStory
          const list = (params: Record<string, string>) =>
            Effect.map(
              call("GET", `/api/v1/admin/audit-events${query({ limit: 100, ...params })}`, { auth: admin.accessToken }),
              (reply) => expectStatus(reply, 200).items as Array<any>
            )
          const actions = (items: Array<any>) => items.map((item) => item.action)

          const failed = yield* list({ action: "auth.login.failed", targetId: alice.id })
          expect(failed).toHaveLength(1)
          expect(failed[0]).toMatchObject({ action: "auth.login.failed", targetId: alice.id })

          const keys = yield* list({ actorId: alice.id, targetType: "api_key" })
          expect(actions(keys)).toEqual(["api-key.revoked", "api-key.created"])

          const byAdmin = yield* list({ actorId: admin.id, targetId: alice.id })
          expect(actions(byAdmin)).toEqual(["user.enabled", "user.disabled", "user.role.changed", "user.role.changed"])

          const since = yield* list({ targetId: alice.id, from: beforeDisable })
          expect(actions(since)).toEqual(["user.enabled", "user.disabled"])
          const until = yield* list({ targetId: alice.id, to: beforeDisable })
          expect(actions(until)).toEqual(expect.arrayContaining(["user.registered", "auth.login.failed"]))
          expect(actions(until)).not.toContain("user.disabled")
          expect(actions(until)).not.toContain("user.enabled")
          const everything = yield* list({ targetId: alice.id })
          expect(until.length + since.length).toBe(everything.length)
          expect(yield* list({ targetId: alice.id, from: beforeDisable, to: beforeDisable })).toEqual([])
        }))

      it.effect("pages newest first with limit and nextCursor, each event once", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const { alice } = yield* AuditStory
          const pages = yield* everyPage("/api/v1/admin/audit-events", admin.accessToken, {
            actorId: alice.id,
            limit: 2
          })
          const events = pages.flat()
          expect(pages.length).toBeGreaterThan(2)
          for (const page of pages.slice(0, -1)) expect(page).toHaveLength(2)
          const ids = events.map((item) => item.id)
          expect(new Set(ids).size).toBe(ids.length)
          const times = events.map((item) => Date.parse(item.createdAt))
          expect(times).toEqual([...times].sort((a, b) => b - a))
          const all = expectStatus(
            yield* call("GET", `/api/v1/admin/audit-events${query({ actorId: alice.id, limit: 100 })}`, {
              auth: admin.accessToken
            }),
            200
          )
          expect(ids).toEqual(all.items.map((item: { id: string }) => item.id))
          const garbage = yield* call("GET", "/api/v1/admin/audit-events?cursor=garbage", { auth: admin.accessToken })
          expect(garbage).toMatchObject({ status: 422, body: { _tag: "ValidationError" } })
        }))

      it.effect("is for admins only", () =>
        Effect.gen(function*() {
          const { owner } = yield* TheCast
          const reply = yield* call("GET", "/api/v1/admin/audit-events", { auth: owner.accessToken })
          expect(reply).toMatchObject({ status: 403, body: { _tag: "Forbidden" } })
        }))
    })
  })
}
