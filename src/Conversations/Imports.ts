/**
 * Chat histories exported by other products (Open WebUI, ChatGPT), translated into this server's own
 * conversation document, so that one import checks and writes them all.
 *
 * Both products keep a tree of messages (each names its parent; an edit or a regenerated answer is a
 * sibling) and the message the user was last at. Messages this server has no place for (ChatGPT's
 * system prompts and hidden context, tool calls and their results, reasoning, pictures without text)
 * are left out (Open WebUI's system messages are kept): what was below one hangs from the nearest
 * message kept above it, and a current message left out gives way to that same message. A tree that does not hold together (a parent that is not in
 * the file, parents in a cycle) is refused, with the file's own path to the faulty field.
 */
import { DateTime, Either, ParseResult, Schema } from "effect"
import type { MessageRole, MessageStatus } from "../Domain/Conversation.js"
import { FieldIssue, ValidationError } from "../Domain/Errors.js"
import type { JsonObject } from "../Domain/Fields.js"
import {
  type ChatGptConversation,
  type ChatGptNode,
  ConversationExport,
  maxContentLength,
  maxTitleLength,
  type OpenWebUiChat,
  type OpenWebUiMessage
} from "./Api.js"

type Path = ReadonlyArray<string | number>

export type ImportSource = "open-webui" | "chatgpt"

/** One conversation of a file, as a document of this server's own. */
export interface TranslatedConversation {
  readonly sourceId: string | null
  readonly document: ConversationExport
  /** The file's messages left out (see the module's comment); nodes holding no message are not counted. */
  readonly skippedCount: number
  /** Where a path into `document` points in the uploaded file, for issues found in the document. */
  readonly origin: (path: Path) => Path
}

/** A message as it is kept here. */
interface Kept {
  readonly role: MessageRole
  readonly content: string
  readonly status: MessageStatus
  readonly modelName: string | null
  readonly promptTokens: number | null
  readonly completionTokens: number | null
  readonly time: number | null
  readonly metadata: JsonObject
}

/** A node of the file's tree: a message kept, one left out, or a node that holds no message (a bare root). */
interface SourceNode {
  readonly key: string
  readonly parent: string | null
  readonly at: Path
  readonly parentAt: Path
  readonly contentAt: Path
  readonly timeAt: Path
  readonly kept: Kept | "skipped" | "empty"
}

/** A conversation of the file, read into one shape whatever the product. */
interface SourceConversation {
  readonly at: Path
  readonly sourceId: string | null
  readonly title: string
  readonly titleAt: Path
  readonly time: number | null
  readonly timeAt: Path
  readonly pinned: boolean
  readonly archived: boolean
  readonly nodes: ReadonlyArray<SourceNode>
  /** Each node's children in the order its product shows them (its newest edit or answer last). */
  readonly childOrder: ReadonlyMap<string, ReadonlyArray<string>>
  readonly current: string | null
  readonly currentAt: Path
}

/** As many messages as one document may hold: a file brings at most that many, all conversations together. */
const maxMessagesPerFile = 100_000
const maxModelName = 200

/** Milliseconds from an epoch in seconds, milliseconds, microseconds or nanoseconds (told apart by size). */
const epochMillis = (value: number) => {
  const size = Math.abs(value)
  return size >= 1e17 ? value / 1e6 : size >= 1e14 ? value / 1e3 : size >= 1e11 ? value : value * 1000
}

const isoMillis = (millis: number): string | null => {
  const date = new Date(millis)
  return Number.isNaN(date.getTime()) ? null : date.toISOString()
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const count = (value: unknown): number | null =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : null

const modelName = (name: string | null | undefined) => (name ? name.slice(0, maxModelName) : null)

// --- Open WebUI

const openWebUiRoles: ReadonlySet<string> = new Set(["user", "assistant", "system"])

const openWebUiKept = (key: string, message: OpenWebUiMessage): Kept | "skipped" => {
  if (!openWebUiRoles.has(message.role)) return "skipped"
  const role = message.role as MessageRole
  const content = message.content ?? ""
  const failed = role === "assistant" && message.error !== undefined && message.error !== null &&
    message.error !== false
  if (content.trim() === "" && !failed) return "skipped"
  const metadata: Record<string, unknown> = { imported: { from: "open-webui", id: key } }
  if (failed) {
    const error = message.error
    metadata.error = {
      message: typeof error === "string"
        ? error
        : isRecord(error) && typeof error.content === "string"
        ? error.content
        : "The answer failed"
    }
  }
  const usage = isRecord(message.usage) ? message.usage : {}
  return {
    role,
    content,
    status: failed ? "error" : role === "assistant" && message.done === false ? "incomplete" : "complete",
    modelName: role === "assistant" ? modelName(message.modelName ?? message.model) : null,
    // OpenAI's names, or Ollama's.
    promptTokens: count(usage.prompt_tokens ?? usage.prompt_eval_count),
    completionTokens: count(usage.completion_tokens ?? usage.eval_count),
    time: message.timestamp ?? null,
    metadata
  }
}

const readOpenWebUiChat = (chat: OpenWebUiChat, index: number): Either.Either<SourceConversation, FieldIssue> => {
  // A stored record holds the chat in `chat`; a chat alone has the same fields at the top.
  const body = chat.chat ?? chat
  const bodyAt: Path = chat.chat ? [index, "chat"] : [index]
  const history = body.history
  if (history === undefined) {
    return Either.left(
      new FieldIssue({
        path: chat.chat ? [...bodyAt, "history"] : [index, "chat"],
        message: "An Open WebUI chat holds its messages in `chat.history`"
      })
    )
  }
  const messagesAt = [...bodyAt, "history", "messages"]
  const titleAt: Path = chat.title != null ? [index, "title"] : [...bodyAt, "title"]
  const time = chat.created_at ?? body.timestamp ?? null
  const entries = Object.entries(history.messages)
  return Either.right({
    at: [index],
    sourceId: chat.id ?? null,
    title: chat.title ?? body.title ?? "",
    titleAt,
    time,
    timeAt: chat.created_at != null ? [index, "created_at"] : [...bodyAt, "timestamp"],
    pinned: chat.pinned ?? false,
    archived: chat.archived ?? false,
    nodes: entries.map(([key, message]) => ({
      key,
      parent: message.parentId ?? null,
      at: [...messagesAt, key],
      parentAt: [...messagesAt, key, "parentId"],
      contentAt: [...messagesAt, key, "content"],
      timeAt: [...messagesAt, key, "timestamp"],
      kept: openWebUiKept(key, message)
    })),
    childOrder: new Map(entries.map(([key, message]) => [key, message.childrenIds ?? []])),
    current: history.currentId ?? null,
    currentAt: [...bodyAt, "history", "currentId"]
  })
}

// --- ChatGPT

/** The content types that are text a person reads (others: code for a tool, its output, reasoning, context). */
const chatGptTextTypes: ReadonlySet<string> = new Set(["text", "multimodal_text"])

/** The text parts of a message: strings, and what was said in a voice conversation; pictures and files are not. */
const chatGptText = (part: unknown): string | null =>
  typeof part === "string"
    ? part
    : isRecord(part) && part.content_type === "audio_transcription" && typeof part.text === "string"
    ? part.text
    : null

const chatGptKept = (key: string, node: ChatGptNode): Kept | "skipped" | "empty" => {
  const message = node.message
  if (message == null) return "empty"
  const role = message.author.role
  if (
    (role !== "user" && role !== "assistant") ||
    message.metadata?.is_visually_hidden_from_conversation === true ||
    (message.recipient != null && message.recipient !== "all") ||
    !chatGptTextTypes.has(message.content.content_type)
  ) return "skipped"
  const parts = message.content.parts ?? []
  const texts = parts.map(chatGptText).filter((text): text is string => text !== null && text !== "")
  const content = texts.join("\n\n")
  if (content.trim() === "") return "skipped"
  const omitted = parts.filter((part) => chatGptText(part) === null).length
  return {
    role,
    content,
    status: message.status == null || message.status === "finished_successfully" ? "complete" : "incomplete",
    modelName: role === "assistant" ? modelName(message.metadata?.model_slug) : null,
    promptTokens: null,
    completionTokens: null,
    time: message.create_time ?? null,
    metadata: { imported: { from: "chatgpt", id: key, ...(omitted > 0 ? { omittedParts: omitted } : {}) } }
  }
}

const readChatGptConversation = (conversation: ChatGptConversation, index: number): SourceConversation => {
  const entries = Object.entries(conversation.mapping)
  return {
    at: [index],
    sourceId: conversation.conversation_id ?? conversation.id ?? null,
    title: conversation.title ?? "",
    titleAt: [index, "title"],
    time: conversation.create_time ?? null,
    timeAt: [index, "create_time"],
    pinned: false,
    archived: conversation.is_archived ?? false,
    nodes: entries.map(([key, node]) => ({
      key,
      parent: node.parent ?? null,
      at: [index, "mapping", key],
      parentAt: [index, "mapping", key, "parent"],
      contentAt: [index, "mapping", key, "message", "content", "parts"],
      timeAt: [index, "mapping", key, "message", "create_time"],
      kept: chatGptKept(key, node)
    })),
    childOrder: new Map(entries.map(([key, node]) => [key, node.children ?? []])),
    current: conversation.current_node ?? null,
    currentAt: [index, "current_node"]
  }
}

// --- one tree, whatever the product

/**
 * What exports carry after deletions in their product is mended, not refused (one such chat would
 * keep a whole file out): a parent that is not in the file leaves its node a root, and a current
 * message that is not in it leaves the newest leaf current.
 */
const mended = (source: SourceConversation): SourceConversation => {
  const keys = new Set(source.nodes.map((node) => node.key))
  return {
    ...source,
    nodes: source.nodes.map((node) =>
      node.parent !== null && !keys.has(node.parent) ? { ...node, parent: null } : node
    ),
    current: source.current !== null && keys.has(source.current) ? source.current : null
  }
}

/** Whether the nodes form a tree (once `mended`, every parent is in the file): no cycle among the parents. */
const checkTree = (source: SourceConversation, byKey: ReadonlyMap<string, SourceNode>): Array<FieldIssue> => {
  const issues: Array<FieldIssue> = []
  // Walking up from each node must reach a root without passing the same node twice.
  const settled = new Set<string>()
  for (const node of source.nodes) {
    const seen = new Set<string>()
    let current: SourceNode | undefined = node
    while (current && current.parent !== null && !settled.has(current.key)) {
      if (seen.has(current.key)) {
        issues.push(new FieldIssue({ path: node.parentAt, message: "The parents form a cycle" }))
        break
      }
      seen.add(current.key)
      current = byKey.get(current.parent)
    }
    for (const key of seen) settled.add(key)
  }
  return issues
}

/** The conversation as a document, or the issues that keep it from being one. */
const toDocument = (
  source: SourceConversation,
  exportedAt: DateTime.Utc
): Either.Either<Omit<TranslatedConversation, "document"> & { readonly encoded: unknown }, Array<FieldIssue>> => {
  source = mended(source)
  const byKey = new Map(source.nodes.map((node) => [node.key, node]))
  const treeIssues = checkTree(source, byKey)
  if (treeIssues.length > 0) return Either.left(treeIssues)
  const issues: Array<FieldIssue> = []
  const timeOf = (time: number | null, at: Path): string | null => {
    if (time === null) return null
    const iso = isoMillis(epochMillis(time))
    if (iso === null) issues.push(new FieldIssue({ path: at, message: "Not a point in time" }))
    return iso
  }

  // A conversation without a time of its own began with its earliest message.
  const earliest = source.nodes.reduce<number | null>((min, node) => {
    if (typeof node.kept !== "object" || node.kept.time === null) return min
    const millis = epochMillis(node.kept.time)
    return min === null || millis < min ? millis : min
  }, null)
  const createdAt = timeOf(source.time, source.timeAt) ??
    (earliest === null ? null : isoMillis(earliest)) ??
    DateTime.formatIso(exportedAt)

  const children = new Map<string | null, Array<SourceNode>>()
  for (const node of source.nodes) {
    const siblings = children.get(node.parent) ?? []
    siblings.push(node)
    children.set(node.parent, siblings)
  }
  for (const [parent, siblings] of children) {
    if (parent === null) continue
    const listed = new Map((source.childOrder.get(parent) ?? []).map((key, position) => [key, position]))
    const rank = (node: SourceNode) => listed.get(node.key) ?? listed.size
    siblings.sort((a, b) => rank(a) - rank(b))
  }

  // Depth first from the roots, each node hung from the nearest kept node above it; siblings in their
  // order, so that the ids given on import (in document order) break ties between equal times the same way.
  // A message's id in the document is its position (the product's own, kept in its metadata, may be
  // empty or long); what is longer than a message or a title may be is cut, and marked so.
  const messages: Array<Record<string, unknown>> = []
  const origins: Array<SourceNode> = []
  const keptAtOrAbove = new Map<string, string | null>()
  let skippedCount = 0
  const stack: Array<{ node: SourceNode; above: string | null; aboveTime: string }> = (children.get(null) ?? [])
    .map((node) => ({ node, above: null, aboveTime: createdAt }))
    .reverse()
  while (stack.length > 0) {
    const { above, aboveTime, node } = stack.pop()!
    let here = above
    let hereTime = aboveTime
    if (typeof node.kept === "object") {
      const kept = node.kept
      hereTime = timeOf(kept.time, node.timeAt) ?? aboveTime
      here = String(messages.length)
      const cut = kept.content.length > maxContentLength
      messages.push({
        id: here,
        parentId: above,
        role: kept.role,
        content: cut ? kept.content.slice(0, maxContentLength) : kept.content,
        status: kept.status,
        modelName: kept.modelName,
        promptTokens: kept.promptTokens,
        completionTokens: kept.completionTokens,
        toolCalls: [],
        metadata: cut ? truncatedIn(kept.metadata) : kept.metadata,
        editedFromId: null,
        deleted: false,
        createdAt: hereTime
      })
      origins.push(node)
    } else if (node.kept === "skipped") {
      skippedCount++
    }
    keptAtOrAbove.set(node.key, here)
    const below = children.get(node.key) ?? []
    for (let index = below.length - 1; index >= 0; index--) {
      stack.push({ node: below[index]!, above: here, aboveTime: hereTime })
    }
  }
  if (issues.length > 0) return Either.left(issues)

  const origin = (path: Path): Path => {
    const [head, index, field] = path
    const node = head === "messages" && typeof index === "number" ? origins[index] : undefined
    if (node) {
      return field === "content"
        ? node.contentAt
        : field === "createdAt"
        ? node.timeAt
        : field === "parentId"
        ? node.parentAt
        : node.at
    }
    if (head === "conversation") {
      return index === "title"
        ? source.titleAt
        : index === "createdAt"
        ? source.timeAt
        : index === "currentLeafId"
        ? source.currentAt
        : source.at
    }
    return source.at
  }

  return Either.right({
    sourceId: source.sourceId,
    skippedCount,
    origin,
    encoded: {
      format: "webplus.conversation",
      version: 1,
      exportedAt: DateTime.formatIso(exportedAt),
      conversation: {
        title: source.title.slice(0, maxTitleLength),
        pinned: source.pinned,
        archived: source.archived,
        currentLeafId: source.current === null ? null : keptAtOrAbove.get(source.current) ?? null,
        createdAt
      },
      messages,
      threads: []
    }
  })
}

/** `metadata` with its `imported` record saying the content was cut to what a message may hold. */
const truncatedIn = (metadata: JsonObject): JsonObject => ({
  ...metadata,
  imported: { ...(isRecord(metadata.imported) ? metadata.imported : {}), truncated: true }
})

const decodeDocument = Schema.decodeUnknownEither(ConversationExport, { errors: "all" })

/** Every conversation as a document (checked by the document's own schema), or every issue found in the file. */
const translate = (
  sources: ReadonlyArray<Either.Either<SourceConversation, FieldIssue>>,
  exportedAt: DateTime.Utc
): Either.Either<ReadonlyArray<TranslatedConversation>, ValidationError> => {
  const issues: Array<FieldIssue> = []
  const translated: Array<TranslatedConversation> = []
  let messageCount = 0
  for (const source of sources) {
    if (Either.isLeft(source)) {
      issues.push(source.left)
      continue
    }
    const result = toDocument(source.right, exportedAt)
    if (Either.isLeft(result)) {
      issues.push(...result.left)
      continue
    }
    const { encoded, origin, skippedCount, sourceId } = result.right
    const decoded = decodeDocument(encoded)
    if (Either.isLeft(decoded)) {
      for (const issue of ParseResult.ArrayFormatter.formatErrorSync(decoded.left)) {
        issues.push(new FieldIssue({ path: origin(issue.path.map(segment)), message: issue.message }))
      }
      continue
    }
    messageCount += decoded.right.messages.length
    translated.push({ sourceId, document: decoded.right, skippedCount, origin })
  }
  if (messageCount > maxMessagesPerFile) {
    issues.push(
      new FieldIssue({ path: [], message: `A file may bring at most ${maxMessagesPerFile} messages; split it` })
    )
  }
  return issues.length > 0
    ? Either.left(new ValidationError({ message: "The file is not an export this server can import", issues }))
    : Either.right(translated)
}

const segment = (key: PropertyKey): string | number => (typeof key === "number" ? key : String(key))

/** The chats of Open WebUI's "Export chats" as documents. */
export const fromOpenWebUi = (chats: ReadonlyArray<OpenWebUiChat>, exportedAt: DateTime.Utc) =>
  translate(chats.map(readOpenWebUiChat), exportedAt)

/** The conversations of ChatGPT's `conversations.json` as documents. */
export const fromChatGpt = (conversations: ReadonlyArray<ChatGptConversation>, exportedAt: DateTime.Utc) =>
  translate(
    conversations.map((conversation, index) => Either.right(readChatGptConversation(conversation, index))),
    exportedAt
  )
