/** A conversation as a self-contained, importable document. */
import { type DateTime, Option } from "effect"
import type { Conversation, Message, Thread } from "../Domain/Conversation.js"
import { ConversationExport, ExportedMessage, ExportedThread, ExportedThreadMessage } from "./Api.js"

/**
 * A conversation as a self-contained document: every branch (deleted messages marked),
 * threads with their live messages. Message ids are the stored ones; an import maps them to new ids.
 */
export const exportDocument = (
  conversation: Pick<Conversation, "title" | "pinned" | "archived" | "currentLeafId" | "createdAt">,
  messages: ReadonlyArray<Message>,
  threads: ReadonlyArray<Thread>,
  exportedAt: DateTime.Utc
): ConversationExport => {
  const treeMessages = messages.filter((message) => message.threadId === null)
  return new ConversationExport({
    format: "webplus.conversation",
    version: 1,
    exportedAt,
    conversation: {
      title: conversation.title,
      pinned: conversation.pinned,
      archived: conversation.archived,
      currentLeafId: conversation.currentLeafId,
      createdAt: conversation.createdAt
    },
    messages: treeMessages.map((message) =>
      new ExportedMessage({
        id: message.id,
        parentId: message.parentId,
        role: message.role,
        content: message.content,
        status: message.status,
        modelName: message.modelName,
        promptTokens: message.promptTokens,
        completionTokens: message.completionTokens,
        toolCalls: message.toolCalls,
        metadata: message.metadata,
        editedFromId: message.editedFromId,
        deleted: Option.isSome(message.deletedAt),
        createdAt: message.createdAt
      })
    ),
    threads: threads.map((thread) =>
      new ExportedThread({
        anchorMessageId: thread.anchorMessageId,
        title: thread.title,
        createdAt: thread.createdAt,
        messages: messages
          .filter((message) => message.threadId === thread.id && Option.isNone(message.deletedAt))
          .map((message) =>
            new ExportedThreadMessage({
              role: message.role,
              content: message.content,
              status: message.status,
              modelName: message.modelName,
              metadata: message.metadata,
              createdAt: message.createdAt
            })
          )
      })
    )
  })
}
