/** Uploaded files, their attachment to messages, and the background analysis of their content. */
import { Model } from "@effect/sql"
import { Schema } from "effect"
import { JsonObjectColumn, NonNegativeInt, OptionalDateTime } from "./Fields.js"
import { FileAnalysisId, FileId, IdInsert, LlmModelId, MessageId, UserId } from "./Ids.js"

export class StoredFile extends Model.Class<StoredFile>("StoredFile")({
  id: IdInsert(FileId),
  userId: UserId,
  originalName: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  contentType: Schema.String,
  sizeBytes: NonNegativeInt,
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  storageKey: Model.Sensitive(Schema.String),
  /**
   * The content's data key sealed under `contentKeyId` of `ENCRYPTION_KEYS` (`Files/ContentCipher.ts`);
   * both null: the content is stored as it is.
   */
  contentKeyCiphertext: Model.Sensitive(Schema.NullOr(Schema.String)),
  contentKeyId: Model.Sensitive(Schema.NullOr(Schema.String)),
  deletedAt: OptionalDateTime,
  createdAt: Model.DateTimeInsert
}) {}

export class MessageFile extends Model.Class<MessageFile>("MessageFile")({
  messageId: MessageId,
  fileId: FileId,
  createdAt: Model.DateTimeInsert
}) {}

export const AnalysisStatus = Schema.Literal("pending", "processing", "complete", "error")
export type AnalysisStatus = typeof AnalysisStatus.Type

export class FileAnalysis extends Model.Class<FileAnalysis>("FileAnalysis")({
  id: IdInsert(FileAnalysisId),
  fileId: FileId,
  status: AnalysisStatus,
  extractedText: Schema.NullOr(Schema.String),
  analysis: JsonObjectColumn,
  error: Schema.NullOr(Schema.String),
  modelId: Schema.NullOr(LlmModelId),
  attempts: NonNegativeInt,
  completedAt: OptionalDateTime,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}
