/**
 * The typed TypeScript interface of Web+: the operations of the REST API as
 * one `@effect/rpc` group, with chat answers as RPC streams of the same events
 * the SSE endpoint sends. Schemas only: a client imports this module and
 * `RpcClient.make(WebPlusRpcs)`, pulling in no server code (no service, no
 * repository, no database driver, no Node module; `test/RpcContract.test.ts`
 * holds it to that).
 *
 * Payloads are the REST request's parts in one object: the path's ids beside
 * the body's or the query's fields. Every operation but `login`, `refresh`
 * and `register` needs a credential, sent as an `authorization: Bearer …` (an
 * access token or an API key) or an `x-api-key` header, on the HTTP request
 * or the WebSocket upgrade, or per call with `RpcClient.withHeaders`.
 */
import { Rpc, RpcGroup, RpcMiddleware } from "@effect/rpc"
import { Schema } from "effect"
import {
  ApiKeyView,
  ChangePasswordPayload,
  CreateApiKeyPayload,
  CreatedApiKey,
  LoginPayload,
  RefreshPayload,
  RegisterPayload,
  TokenPair,
  UserView
} from "../Auth/Api.js"
import {
  ChatEvent,
  ChatPayload,
  ContinuePayload,
  NewChatPayload,
  RegeneratePayload,
  ThreadChatPayload
} from "../Chat/Api.js"
import {
  AppendMessagePayload,
  AppendThreadMessagePayload,
  ChatGptExport,
  ConversationExport,
  ConversationListQuery,
  CreateConversationPayload,
  CreateThreadPayload,
  EditMessagePayload,
  ImportSummary,
  MessageList,
  MessageListQuery,
  OpenWebUiExport,
  SearchHit,
  SearchQuery,
  SetCurrentLeafPayload,
  UpdateConversationPayload,
  UpdateThreadPayload
} from "../Conversations/Api.js"
import { CurrentActor } from "../Domain/Actor.js"
import { ConversationView, MessageView, ThreadView } from "../Domain/Conversation.js"
import {
  Conflict,
  Forbidden,
  NotFound,
  RateLimited,
  ServiceUnavailable,
  Unauthorized,
  ValidationError
} from "../Domain/Errors.js"
import { NonNegativeInt } from "../Domain/Fields.js"
import {
  ApiKeyId,
  ConversationId,
  FileAnalysisId,
  FileId,
  LlmModelId,
  MessageId,
  ModelConfigId,
  ProviderId,
  ThreadId,
  UserId
} from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { RoleName } from "../Domain/User.js"
import {
  FeedbackEntry,
  FeedbackListQuery,
  FeedbackPayload,
  FeedbackSummary,
  FeedbackSummaryQuery,
  FeedbackView
} from "../Feedback/Api.js"
import {
  FileAnalysisView,
  FilesUsage,
  FileView,
  PassageMatches,
  PassageSearch,
  RequestAnalysisPayload
} from "../Files/Api.js"
import { MyUsageQuery, UsageReportQuery } from "../Gateway/Api.js"
import { ApiKeyUsage, MyUsage, TokenBudget, UsageReport } from "../Gateway/Schemas.js"
import {
  EntityDetail,
  EntitySearch,
  EntityView,
  ExtractionView,
  GraphEntityId,
  GraphExtractionId,
  RequestExtractionPayload,
  SimilarEntities,
  SimilarSearch
} from "../Graph/Api.js"
import {
  CreateModelConfigPayload,
  CreateModelPayload,
  CreateProviderPayload,
  ModelConfigView,
  ModelsQuery,
  ModelView,
  ProviderHealth,
  ProviderView,
  PullPayload,
  SyncResult,
  UpdateModelConfigPayload,
  UpdateModelPayload,
  UpdateProviderPayload,
  Whole
} from "../Models/Api.js"
import { ProviderError, ProviderTimeout, ProviderUnavailable, ProviderUnreachable } from "../Models/Errors.js"
import {
  CreateSharePayload,
  ShareId,
  ShareListQuery,
  ShareStats,
  ShareView,
  UpdateSharePayload
} from "../Shares/Api.js"
import {
  AuditEventView,
  AuditQuery,
  Consent,
  CreateRolePayload,
  CreateUserPayload,
  DeleteAccountPayload,
  PersonalDataExport,
  ResetPasswordPayload,
  RoleView,
  SetRolePayload,
  UpdateAccountPayload,
  UpdateConsentPayload,
  UpdateRolePayload
} from "../Users/Api.js"

/** The caller, from the credential of the request (or of the WebSocket's upgrade, or of the call). */
export class RpcAuthentication extends RpcMiddleware.Tag<RpcAuthentication>()("Rpc/Authentication", {
  provides: CurrentActor,
  failure: Schema.Union(Unauthorized, RateLimited)
}) {}

/**
 * A request class's fields as a plain struct: a client passes plain objects, where a class would
 * have to be constructed to be encoded.
 */
const fieldsOf = <Fields extends Schema.Struct.Fields>(schema: { readonly fields: Fields }) =>
  Schema.Struct(schema.fields)

/**
 * Runs each call as the HTTP request that carried it: the client's address and user agent, for
 * rate limits, sessions and the audit trail (server side only). Any call may fail with
 * `ServiceUnavailable` while the database cannot be reached (the REST API's 503).
 */
export class RpcClientContext extends RpcMiddleware.Tag<RpcClientContext>()("Rpc/ClientContext", {
  wrap: true,
  failure: ServiceUnavailable
}) {}

/** What any authenticated operation may fail with besides its own errors. */
const Refused = Schema.Union(Forbidden, ValidationError)
const ProviderFailure = Schema.Union(ProviderUnreachable, ProviderTimeout, ProviderError, ProviderUnavailable)

const AuthError = Schema.Union(
  Unauthorized,
  Forbidden,
  NotFound,
  Conflict,
  RateLimited,
  ServiceUnavailable,
  ValidationError
)
const ConversationError = Schema.Union(Refused, NotFound, Conflict)
const ModelError = Schema.Union(Refused, NotFound, Conflict, ProviderFailure)
const ChatError = Schema.Union(Refused, NotFound, RateLimited, ProviderFailure)

const conversation = { id: ConversationId }
const message = { id: ConversationId, messageId: MessageId }
const thread = { id: ConversationId, threadId: ThreadId }

// --- accounts

const AccountRpcs = RpcGroup.make(
  Rpc.make("register", { payload: fieldsOf(RegisterPayload), success: UserView, error: AuthError }),
  Rpc.make("login", { payload: fieldsOf(LoginPayload), success: TokenPair, error: AuthError }),
  Rpc.make("refresh", { payload: fieldsOf(RefreshPayload), success: TokenPair, error: AuthError })
)

const SessionRpcs = RpcGroup.make(
  Rpc.make("logout", { error: AuthError }),
  Rpc.make("me", { success: UserView, error: AuthError }),
  Rpc.make("changePassword", { payload: fieldsOf(ChangePasswordPayload), error: AuthError }),
  Rpc.make("createApiKey", { payload: fieldsOf(CreateApiKeyPayload), success: CreatedApiKey, error: Refused }),
  Rpc.make("listApiKeys", { success: Whole(ApiKeyView), error: Refused }),
  Rpc.make("revokeApiKey", { payload: { id: ApiKeyId }, error: Schema.Union(Refused, NotFound) })
)

// --- conversations

const ConversationRpcs = RpcGroup.make(
  Rpc.make("createConversation", {
    payload: fieldsOf(CreateConversationPayload),
    success: ConversationView,
    error: ConversationError
  }),
  Rpc.make("listConversations", { payload: ConversationListQuery, success: Page(ConversationView), error: Refused }),
  Rpc.make("getConversation", { payload: conversation, success: ConversationView, error: ConversationError }),
  Rpc.make("updateConversation", {
    payload: { ...conversation, changes: fieldsOf(UpdateConversationPayload) },
    success: ConversationView,
    error: ConversationError
  }),
  Rpc.make("deleteConversation", { payload: conversation, error: ConversationError }),
  Rpc.make("restoreConversation", { payload: conversation, success: ConversationView, error: ConversationError }),
  Rpc.make("purgeConversation", { payload: conversation, error: ConversationError }),
  Rpc.make("listMessages", {
    payload: { ...conversation, query: MessageListQuery },
    success: MessageList,
    error: ConversationError
  }),
  Rpc.make("appendMessage", {
    payload: { ...conversation, message: fieldsOf(AppendMessagePayload) },
    success: MessageView,
    error: ConversationError
  }),
  Rpc.make("getMessage", { payload: message, success: MessageView, error: ConversationError }),
  Rpc.make("editMessage", {
    payload: { ...message, edit: fieldsOf(EditMessagePayload) },
    success: MessageView,
    error: ConversationError
  }),
  Rpc.make("deleteMessage", { payload: message, error: ConversationError }),
  Rpc.make("setCurrentLeaf", {
    payload: { ...conversation, leaf: fieldsOf(SetCurrentLeafPayload) },
    success: ConversationView,
    error: ConversationError
  }),
  Rpc.make("createThread", {
    payload: { ...conversation, thread: fieldsOf(CreateThreadPayload) },
    success: ThreadView,
    error: ConversationError
  }),
  Rpc.make("listThreads", {
    payload: { ...conversation, page: PageParams },
    success: Page(ThreadView),
    error: ConversationError
  }),
  Rpc.make("updateThread", {
    payload: { ...thread, changes: fieldsOf(UpdateThreadPayload) },
    success: ThreadView,
    error: ConversationError
  }),
  Rpc.make("deleteThread", { payload: thread, error: ConversationError }),
  Rpc.make("listThreadMessages", {
    payload: { ...thread, page: PageParams },
    success: Page(MessageView),
    error: ConversationError
  }),
  Rpc.make("appendThreadMessage", {
    payload: { ...thread, message: fieldsOf(AppendThreadMessagePayload) },
    success: MessageView,
    error: ConversationError
  }),
  Rpc.make("search", { payload: SearchQuery, success: Page(SearchHit), error: Refused }),
  Rpc.make("exportConversation", { payload: conversation, success: ConversationExport, error: ConversationError }),
  Rpc.make("exportConversationMarkdown", { payload: conversation, success: Schema.String, error: ConversationError }),
  Rpc.make("importConversation", {
    payload: { document: ConversationExport },
    success: ConversationView,
    error: ConversationError
  }),
  Rpc.make("importOpenWebUi", { payload: { file: OpenWebUiExport }, success: ImportSummary, error: Refused }),
  Rpc.make("importChatGpt", { payload: { file: ChatGptExport }, success: ImportSummary, error: Refused })
)

// --- models (listing and reading for everyone allowed to; the rest for administrators)

const ModelRpcs = RpcGroup.make(
  Rpc.make("listModels", { payload: ModelsQuery, success: Whole(ModelView), error: ModelError }),
  Rpc.make("getModel", { payload: { id: LlmModelId }, success: ModelView, error: ModelError }),
  Rpc.make("createModel", { payload: fieldsOf(CreateModelPayload), success: ModelView, error: ModelError }),
  Rpc.make("updateModel", {
    payload: { id: LlmModelId, changes: fieldsOf(UpdateModelPayload) },
    success: ModelView,
    error: ModelError
  }),
  Rpc.make("deleteModel", { payload: { id: LlmModelId }, error: ModelError }),
  Rpc.make("startModel", { payload: { id: LlmModelId }, success: ModelView, error: ModelError }),
  Rpc.make("stopModel", { payload: { id: LlmModelId }, success: ModelView, error: ModelError }),
  Rpc.make("createProvider", { payload: fieldsOf(CreateProviderPayload), success: ProviderView, error: ModelError }),
  Rpc.make("listProviders", { success: Whole(ProviderView), error: ModelError }),
  Rpc.make("getProvider", { payload: { id: ProviderId }, success: ProviderView, error: ModelError }),
  Rpc.make("updateProvider", {
    payload: { id: ProviderId, changes: fieldsOf(UpdateProviderPayload) },
    success: ProviderView,
    error: ModelError
  }),
  Rpc.make("deleteProvider", { payload: { id: ProviderId }, error: ModelError }),
  Rpc.make("providerHealth", { payload: { id: ProviderId }, success: ProviderHealth, error: ModelError }),
  Rpc.make("syncProvider", { payload: { id: ProviderId }, success: SyncResult, error: ModelError }),
  Rpc.make("pullModel", { payload: { id: ProviderId, ...PullPayload.fields }, success: ModelView, error: ModelError }),
  Rpc.make("listModelConfigs", { success: Whole(ModelConfigView), error: ModelError }),
  Rpc.make("createModelConfig", {
    payload: fieldsOf(CreateModelConfigPayload),
    success: ModelConfigView,
    error: ModelError
  }),
  Rpc.make("getModelConfig", { payload: { id: ModelConfigId }, success: ModelConfigView, error: ModelError }),
  Rpc.make("updateModelConfig", {
    payload: { id: ModelConfigId, changes: fieldsOf(UpdateModelConfigPayload) },
    success: ModelConfigView,
    error: ModelError
  }),
  Rpc.make("deleteModelConfig", { payload: { id: ModelConfigId }, error: ModelError })
)

// --- your personal data, your usage, and user administration and usage (administrators)

const AccountDataRpcs = RpcGroup.make(
  Rpc.make("exportPersonalData", { success: PersonalDataExport, error: Refused }),
  Rpc.make("updateAccount", { payload: fieldsOf(UpdateAccountPayload), success: UserView, error: AuthError }),
  Rpc.make("deleteAccount", { payload: fieldsOf(DeleteAccountPayload), error: AuthError }),
  Rpc.make("getConsent", { success: Consent, error: Refused }),
  Rpc.make("updateConsent", { payload: fieldsOf(UpdateConsentPayload), success: Consent, error: Refused }),
  Rpc.make("apiKeyUsage", { payload: { id: ApiKeyId }, success: ApiKeyUsage, error: Schema.Union(Refused, NotFound) }),
  Rpc.make("myUsage", { payload: MyUsageQuery, success: MyUsage, error: Refused }),
  Rpc.make("myBudget", { success: TokenBudget, error: Refused }),
  Rpc.make("listUsers", { payload: PageParams, success: Page(UserView), error: Refused }),
  Rpc.make("createUser", { payload: fieldsOf(CreateUserPayload), success: UserView, error: AuthError }),
  Rpc.make("deleteUser", { payload: { id: UserId }, error: Schema.Union(Refused, NotFound, Conflict) }),
  Rpc.make("resetPassword", {
    payload: { id: UserId, ...ResetPasswordPayload.fields },
    error: Schema.Union(Refused, NotFound, ServiceUnavailable)
  }),
  Rpc.make("setRole", {
    payload: { id: UserId, ...SetRolePayload.fields },
    success: UserView,
    error: Schema.Union(Refused, NotFound, Conflict)
  }),
  Rpc.make("disableUser", {
    payload: { id: UserId },
    success: UserView,
    error: Schema.Union(Refused, NotFound, Conflict)
  }),
  Rpc.make("enableUser", {
    payload: { id: UserId },
    success: UserView,
    error: Schema.Union(Refused, NotFound, Conflict)
  }),
  Rpc.make("listRoles", { success: Schema.Array(RoleView), error: Refused }),
  Rpc.make("createRole", {
    payload: fieldsOf(CreateRolePayload),
    success: RoleView,
    error: Schema.Union(Refused, Conflict)
  }),
  Rpc.make("updateRole", {
    payload: { name: RoleName, ...UpdateRolePayload.fields },
    success: RoleView,
    error: Schema.Union(Refused, NotFound, Conflict)
  }),
  Rpc.make("deleteRole", { payload: { name: RoleName }, error: Schema.Union(Refused, NotFound, Conflict) }),
  Rpc.make("listAuditEvents", { payload: AuditQuery, success: Page(AuditEventView), error: Refused }),
  Rpc.make("usageReport", { payload: UsageReportQuery, success: UsageReport, error: Refused })
)

// --- feedback on answers: your own ratings, and every user's for administrators

const FeedbackRpcs = RpcGroup.make(
  Rpc.make("setFeedback", {
    payload: { ...message, feedback: fieldsOf(FeedbackPayload) },
    success: FeedbackView,
    error: ConversationError
  }),
  Rpc.make("deleteFeedback", { payload: message, error: Schema.Union(Refused, NotFound) }),
  Rpc.make("listFeedback", {
    payload: conversation,
    success: Whole(FeedbackView),
    error: Schema.Union(Refused, NotFound)
  }),
  Rpc.make("feedbackSummary", { payload: FeedbackSummaryQuery, success: FeedbackSummary, error: Refused }),
  Rpc.make("listAllFeedback", { payload: FeedbackListQuery, success: Page(FeedbackEntry), error: Refused })
)

// --- files, the knowledge graph and shares (uploads and downloads are the REST API's: their bodies
// are bytes; so is the public side of shares, for browsers without an account)

const OwnError = Schema.Union(Refused, NotFound)
const file = { id: FileId }

const FileRpcs = RpcGroup.make(
  Rpc.make("filesUsage", { success: FilesUsage, error: Refused }),
  Rpc.make("listFiles", { payload: PageParams, success: Page(FileView), error: Refused }),
  Rpc.make("getFile", { payload: file, success: FileView, error: OwnError }),
  Rpc.make("filePassages", {
    payload: { ...file, ...PassageSearch.fields },
    success: PassageMatches,
    error: Schema.Union(OwnError, RateLimited, ServiceUnavailable, ProviderFailure)
  }),
  Rpc.make("deleteFile", { payload: file, error: OwnError }),
  Rpc.make("requestAnalysis", {
    payload: { ...file, analysis: fieldsOf(RequestAnalysisPayload) },
    success: FileAnalysisView,
    error: Schema.Union(OwnError, RateLimited)
  }),
  Rpc.make("listAnalyses", { payload: file, success: Schema.Array(FileAnalysisView), error: OwnError }),
  Rpc.make("getAnalysis", {
    payload: { ...file, analysisId: FileAnalysisId },
    success: FileAnalysisView,
    error: OwnError
  }),
  Rpc.make("requestExtraction", {
    payload: fieldsOf(RequestExtractionPayload),
    success: ExtractionView,
    error: Schema.Union(OwnError, RateLimited)
  }),
  Rpc.make("listExtractions", { payload: PageParams, success: Page(ExtractionView), error: Refused }),
  Rpc.make("getExtraction", { payload: { id: GraphExtractionId }, success: ExtractionView, error: OwnError }),
  Rpc.make("searchEntities", { payload: EntitySearch, success: Page(EntityView), error: Refused }),
  Rpc.make("similarEntities", {
    payload: SimilarSearch,
    success: SimilarEntities,
    error: Schema.Union(Refused, NotFound, ServiceUnavailable, RateLimited, ProviderFailure)
  }),
  Rpc.make("getEntity", { payload: { id: GraphEntityId }, success: EntityDetail, error: OwnError }),
  Rpc.make("deleteEntity", { payload: { id: GraphEntityId }, error: OwnError }),
  Rpc.make("createShare", { payload: fieldsOf(CreateSharePayload), success: ShareView, error: OwnError }),
  Rpc.make("listShares", { payload: ShareListQuery, success: Page(ShareView), error: Refused }),
  Rpc.make("shareStats", { success: ShareStats, error: Refused }),
  Rpc.make("getShare", { payload: { id: ShareId }, success: ShareView, error: OwnError }),
  Rpc.make("updateShare", {
    payload: { id: ShareId, changes: fieldsOf(UpdateSharePayload) },
    success: ShareView,
    error: Schema.Union(Refused, NotFound, Conflict)
  }),
  Rpc.make("revokeShare", { payload: { id: ShareId }, error: OwnError })
)

// --- chat: each answer a stream of the SSE endpoint's events, `start` first and `done` last

const ChatRpcs = RpcGroup.make(
  Rpc.make("chat", {
    payload: { ...conversation, message: fieldsOf(ChatPayload) },
    success: ChatEvent,
    error: ChatError,
    stream: true
  }),
  Rpc.make("newChat", { payload: fieldsOf(NewChatPayload), success: ChatEvent, error: ChatError, stream: true }),
  Rpc.make("threadChat", {
    payload: { ...thread, message: fieldsOf(ThreadChatPayload) },
    success: ChatEvent,
    error: ChatError,
    stream: true
  }),
  Rpc.make("regenerate", {
    payload: { ...message, choice: fieldsOf(RegeneratePayload) },
    success: ChatEvent,
    error: ChatError,
    stream: true
  }),
  Rpc.make("continueChat", {
    payload: { ...conversation, choice: fieldsOf(ContinuePayload) },
    success: ChatEvent,
    error: ChatError,
    stream: true
  }),
  Rpc.make("cancelAnswer", { payload: message, success: MessageView, error: ChatError }),
  Rpc.make("resumeAnswer", {
    payload: { ...message, after: Schema.optional(NonNegativeInt) },
    success: ChatEvent,
    error: ChatError,
    stream: true
  })
)

/** Every operation: the account ones without a credential, the others with one. */
export class WebPlusRpcs extends AccountRpcs.merge(
  SessionRpcs.merge(AccountDataRpcs, ConversationRpcs, FeedbackRpcs, ModelRpcs, FileRpcs, ChatRpcs).middleware(
    RpcAuthentication
  )
).middleware(RpcClientContext) {}
