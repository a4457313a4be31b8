import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Feedback } from "../Feedback.js"

export const FeedbackHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "feedback",
  (handlers) =>
    Effect.gen(function*() {
      const feedback = yield* Feedback
      return handlers
        .handle("setFeedback", ({ path, payload }) => feedback.set(path.id, path.messageId, payload))
        .handle("deleteFeedback", ({ path }) => feedback.remove(path.id, path.messageId))
        .handle("listFeedback", ({ path }) => feedback.ofConversation(path.id))
        .handle("feedbackSummary", ({ urlParams }) => feedback.summary(urlParams))
        .handle("listAllFeedback", ({ urlParams }) => feedback.list(urlParams))
    })
)
