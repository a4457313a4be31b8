/**
 * Lists of models that limit a credential: an API key's, a role's. A list names models by id; the
 * actor it applies to sees and uses only those (`Actor.mayUse`).
 */
import { Effect } from "effect"
import { FieldIssue, ValidationError } from "../Domain/Errors.js"
import type { LlmModelId } from "../Domain/Ids.js"
import type { ModelsRepo } from "./ModelsRepo.js"

/**
 * `ids` without repeats, checked to name models (usable ones, with `usableOnly`) that `allowed`
 * lets through: a 422 naming each entry that does not, at `["models", index]`.
 */
export const checkedModelList = (
  repo: ModelsRepo,
  ids: ReadonlyArray<LlmModelId>,
  options: { readonly usableOnly: boolean; readonly allowed?: (id: LlmModelId) => boolean; readonly message: string }
): Effect.Effect<ReadonlyArray<LlmModelId>, ValidationError> =>
  Effect.flatMap(repo.existing(ids, options.usableOnly), (found) => {
    const issues = ids.flatMap((id, index) =>
      found.has(id) && (options.allowed?.(id) ?? true)
        ? []
        : [new FieldIssue({ path: ["models", index], message: "No such model" })]
    )
    return issues.length > 0
      ? Effect.fail(new ValidationError({ message: options.message, issues }))
      : Effect.succeed(Array.from(new Set(ids)))
  })

/** What both lists allow; `null` for a list that does not limit. Undefined when neither limits. */
export const allowedModels = (
  ...lists: ReadonlyArray<ReadonlyArray<LlmModelId> | null>
): ReadonlyArray<LlmModelId> | undefined =>
  lists.reduce<ReadonlyArray<LlmModelId> | undefined>(
    (allowed, list) =>
      list === null ? allowed : allowed === undefined ? list : allowed.filter((id) => list.includes(id)),
    undefined
  )
