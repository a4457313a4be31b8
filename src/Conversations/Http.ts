import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Conversations } from "../Conversations.js"

export const ConversationsHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "conversations",
  (handlers) =>
    Effect.gen(function*() {
      const conversations = yield* Conversations
      return handlers
        .handle("createConversation", ({ payload }) => conversations.create(payload))
        .handle("listConversations", ({ urlParams }) => conversations.list(urlParams))
        .handle("importConversation", ({ payload }) => conversations.importConversation(payload))
        .handle("importOpenWebUi", ({ payload }) => conversations.importOpenWebUi(payload))
        .handle("importChatGpt", ({ payload }) => conversations.importChatGpt(payload))
        .handle("getConversation", ({ path }) => conversations.get(path.id))
        .handle("updateConversation", ({ path, payload }) => conversations.update(path.id, payload))
        .handle("deleteConversation", ({ path }) => conversations.trash(path.id))
        .handle("restoreConversation", ({ path }) => conversations.restore(path.id))
        .handle("purgeConversation", ({ path }) => conversations.purge(path.id))
        .handle("exportConversation", ({ path }) => conversations.exportJson(path.id))
        .handle("exportConversationMarkdown", ({ path }) => conversations.exportMarkdown(path.id))
        .handle("listMessages", ({ path, urlParams }) => conversations.listMessages(path.id, urlParams))
        .handle("appendMessage", ({ path, payload }) => conversations.appendMessage(path.id, payload))
        .handle("getMessage", ({ path }) => conversations.getMessage(path.id, path.messageId))
        .handle("editMessage", ({ path, payload }) => conversations.editMessage(path.id, path.messageId, payload))
        .handle("deleteMessage", ({ path }) => conversations.deleteMessage(path.id, path.messageId))
        .handle("setCurrentLeaf", ({ path, payload }) => conversations.setCurrentLeaf(path.id, payload))
        .handle("createThread", ({ path, payload }) => conversations.createThread(path.id, payload))
        .handle("listThreads", ({ path, urlParams }) => conversations.listThreads(path.id, urlParams))
        .handle("updateThread", ({ path, payload }) => conversations.updateThread(path.id, path.threadId, payload))
        .handle("deleteThread", ({ path }) => conversations.deleteThread(path.id, path.threadId))
        .handle(
          "listThreadMessages",
          ({ path, urlParams }) => conversations.listThreadMessages(path.id, path.threadId, urlParams)
        )
        .handle(
          "appendThreadMessage",
          ({ path, payload }) => conversations.appendThreadMessage(path.id, path.threadId, payload)
        )
        .handle("search", ({ urlParams }) => conversations.search(urlParams))
    })
)
