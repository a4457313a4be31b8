/**
 * Every migration, in order. A migration is forward-only and never edited once
 * released: change the schema by adding the next `NNNN_name` entry.
 */
import initial from "./0001_initial.js"
import conversationHistory from "./0002_conversation_history.js"
import usage from "./0003_usage.js"
import siblingPositions from "./0004_sibling_positions.js"
import searchFinishedAnswers from "./0005_search_finished_answers.js"
import apiKeyRateLimits from "./0006_api_key_rate_limits.js"
import jobQueue from "./0007_job_queue.js"
import knowledgeGraph from "./0008_knowledge_graph.js"
import shares from "./0009_shares.js"
import shareDetails from "./0010_share_details.js"
import rateLimitExemption from "./0011_rate_limit_exemption.js"
import apiKeyModels from "./0012_api_key_models.js"
import roleModels from "./0013_role_models.js"
import roleTokenBudgets from "./0014_role_token_budgets.js"
import apiKeyTokenBudgets from "./0015_api_key_token_budgets.js"
import oidc from "./0017_oidc.js"
import graphRelationshipSources from "./0018_graph_relationship_sources.js"
import messageFeedback from "./0019_message_feedback.js"
import graphEntityEmbeddings from "./0020_graph_entity_embeddings.js"
import backgroundUsage from "./0021_background_usage.js"
import filePassages from "./0022_file_passages.js"
import fileContentKeys from "./0023_file_content_keys.js"

export const migrations = {
  "0001_initial": initial,
  "0002_conversation_history": conversationHistory,
  "0003_usage": usage,
  "0004_sibling_positions": siblingPositions,
  "0005_search_finished_answers": searchFinishedAnswers,
  "0006_api_key_rate_limits": apiKeyRateLimits,
  "0007_job_queue": jobQueue,
  "0008_knowledge_graph": knowledgeGraph,
  "0009_shares": shares,
  "0010_share_details": shareDetails,
  "0011_rate_limit_exemption": rateLimitExemption,
  "0012_api_key_models": apiKeyModels,
  "0013_role_models": roleModels,
  "0014_role_token_budgets": roleTokenBudgets,
  "0015_api_key_token_budgets": apiKeyTokenBudgets,
  "0017_oidc": oidc,
  "0018_graph_relationship_sources": graphRelationshipSources,
  "0019_message_feedback": messageFeedback,
  "0020_graph_entity_embeddings": graphEntityEmbeddings,
  "0021_background_usage": backgroundUsage,
  "0022_file_passages": filePassages,
  "0023_file_content_keys": fileContentKeys
} as const

/** The id of the newest migration this build knows: readiness requires it applied. */
export const latestMigrationId = Math.max(...Object.keys(migrations).map((key) => Number(key.slice(0, 4))))
