/**
 * The text of Office Open XML documents (Word's .docx, Excel's .xlsx, PowerPoint's .pptx): a ZIP
 * archive read through its central directory, then the words in the XML parts that hold them.
 *
 * Nothing here depends on more than `node:zlib`, because this module is what the worker thread of
 * `Office.ts` loads: it is plain synchronous code that may take seconds over a large document.
 * An archive is distrusted: the number of entries, the inflated size of every part read (declared
 * or actual) and the length of the text are bounded, and anything malformed is an `OfficeUnreadable`
 * with a reason, never a crash or a part read past its end.
 */
import { crc32, inflateRawSync } from "node:zlib"

export type OfficeKind = "docx" | "xlsx" | "pptx"

export interface OfficeLimits {
  /** Text past this many characters is not read (what is returned may run a little past it). */
  readonly maxChars: number
  /** Archives with more entries are refused. */
  readonly maxEntries: number
  /** A part that inflates (or says it inflates) to more bytes is refused. */
  readonly maxPartBytes: number
}

/** Why a document's text could not be read. */
export class OfficeUnreadable extends Error {
  override readonly name = "OfficeUnreadable"
}

// --- the archive

interface Entry {
  readonly name: string
  readonly method: number
  readonly crc: number
  readonly compressedSize: number
  readonly size: number
  readonly localOffset: number
  readonly encrypted: boolean
}

const endOfDirectorySignature = 0x06054b50
const zip64LocatorSignature = 0x07064b50
const directorySignature = 0x02014b50
const localSignature = 0x04034b50

/**
 * The entries of a ZIP archive, from its central directory (the local headers are only used to
 * find where each entry's data starts). Part names are compared case-blind, as OPC says.
 */
const openArchive = (bytes: Uint8Array, limits: OfficeLimits) => {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const notZip = "not a ZIP archive, or a truncated one (no end of central directory)"
  if (buffer.length < 22) throw new OfficeUnreadable(notZip)
  // The end record is the last thing in the file, before a comment of at most 65,535 bytes.
  let end = -1
  for (let at = buffer.length - 22; at >= Math.max(0, buffer.length - 22 - 0xffff); at--) {
    if (
      buffer.readUInt32LE(at) === endOfDirectorySignature && at + 22 + buffer.readUInt16LE(at + 20) <= buffer.length
    ) {
      end = at
      break
    }
  }
  if (end < 0) throw new OfficeUnreadable(notZip)
  const declared = buffer.readUInt16LE(end + 10)
  const directorySize = buffer.readUInt32LE(end + 12)
  const directoryOffset = buffer.readUInt32LE(end + 16)
  if (
    declared === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff ||
    (end >= 20 && buffer.readUInt32LE(end - 20) === zip64LocatorSignature)
  ) {
    throw new OfficeUnreadable("ZIP64 archives are not read")
  }
  if (buffer.readUInt16LE(end + 4) !== 0 || buffer.readUInt16LE(end + 6) !== 0) {
    throw new OfficeUnreadable("archives split over several files are not read")
  }
  if (declared > limits.maxEntries) {
    throw new OfficeUnreadable(`the archive has more than ${limits.maxEntries} entries`)
  }
  if (directoryOffset + directorySize > end) throw new OfficeUnreadable("the archive is truncated")

  const entries = new Map<string, Entry>()
  let count = 0
  for (let at = directoryOffset; at < directoryOffset + directorySize;) {
    if (at + 46 > end || buffer.readUInt32LE(at) !== directorySignature) {
      throw new OfficeUnreadable("the archive's central directory is damaged")
    }
    if (++count > limits.maxEntries) {
      throw new OfficeUnreadable(`the archive has more than ${limits.maxEntries} entries`)
    }
    const flags = buffer.readUInt16LE(at + 8)
    const nameLength = buffer.readUInt16LE(at + 28)
    const next = at + 46 + nameLength + buffer.readUInt16LE(at + 30) + buffer.readUInt16LE(at + 32)
    if (next > end) throw new OfficeUnreadable("the archive's central directory is damaged")
    const entry: Entry = {
      name: buffer.toString("utf8", at + 46, at + 46 + nameLength).replace(/\\/g, "/"),
      method: buffer.readUInt16LE(at + 10),
      crc: buffer.readUInt32LE(at + 16),
      compressedSize: buffer.readUInt32LE(at + 20),
      size: buffer.readUInt32LE(at + 24),
      localOffset: buffer.readUInt32LE(at + 42),
      encrypted: (flags & 1) === 1
    }
    const key = entry.name.toLowerCase()
    if (!entries.has(key)) entries.set(key, entry)
    at = next
  }
  if (count !== declared) throw new OfficeUnreadable("the archive's central directory is damaged")

  /** The bytes of `entry`, inflated and checked against its size and CRC. */
  const contentOf = (entry: Entry): Buffer => {
    if (entry.size === 0xffffffff || entry.compressedSize === 0xffffffff || entry.localOffset === 0xffffffff) {
      throw new OfficeUnreadable("ZIP64 archives are not read")
    }
    if (entry.encrypted) throw new OfficeUnreadable(`${entry.name} is encrypted`)
    if (entry.size > limits.maxPartBytes) {
      throw new OfficeUnreadable(`${entry.name} is over ${limits.maxPartBytes} bytes inflated`)
    }
    const local = entry.localOffset
    if (local + 30 > buffer.length || buffer.readUInt32LE(local) !== localSignature) {
      throw new OfficeUnreadable("the archive is truncated or damaged")
    }
    const start = local + 30 + buffer.readUInt16LE(local + 26) + buffer.readUInt16LE(local + 28)
    if (start + entry.compressedSize > buffer.length) throw new OfficeUnreadable("the archive is truncated")
    const data = buffer.subarray(start, start + entry.compressedSize)
    let content: Buffer
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) throw new OfficeUnreadable(`${entry.name} is damaged`)
      content = data
    } else if (entry.method === 8) {
      try {
        // One byte more than declared is enough to tell a lie, and never more than the limit.
        content = inflateRawSync(data, { maxOutputLength: Math.min(entry.size, limits.maxPartBytes) + 1 })
      } catch (error) {
        if ((error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
          throw new OfficeUnreadable(`${entry.name} inflates to more than the ${entry.size} bytes it declares`)
        }
        throw new OfficeUnreadable(`${entry.name} is damaged (${(error as Error).message})`)
      }
    } else {
      throw new OfficeUnreadable(`${entry.name} is compressed with method ${entry.method}, which is not read`)
    }
    if (content.length !== entry.size) {
      throw new OfficeUnreadable(
        content.length > entry.size
          ? `${entry.name} inflates to more than the ${entry.size} bytes it declares`
          : `${entry.name} is damaged (shorter than it declares)`
      )
    }
    if (crc32(content) !== entry.crc) throw new OfficeUnreadable(`${entry.name} is damaged (its checksum differs)`)
    return content
  }

  return {
    names: (): ReadonlyArray<string> => Array.from(entries.values(), (entry) => entry.name),
    has: (name: string): boolean => entries.has(name.toLowerCase()),
    /** The part's XML as a string; `undefined` when the archive has no such part. */
    xml: (name: string): string | undefined => {
      const entry = entries.get(name.toLowerCase())
      if (entry === undefined) return undefined
      const content = contentOf(entry)
      // XML may be UTF-16 (with its byte order mark); Office writes UTF-8.
      return content[0] === 0xff && content[1] === 0xfe ? content.toString("utf16le", 2) : content.toString("utf8")
    }
  }
}

type Archive = ReturnType<typeof openArchive>

// --- XML

/** The text of XML character data: the five named entities and numeric references decoded. */
export const decodeXml = (raw: string): string =>
  raw.indexOf("&") < 0 ? raw : raw.replace(
    /&(?:#(\d{1,7})|#x([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos));/g,
    (_whole, decimal: string | undefined, hex: string | undefined, named: string | undefined) => {
      if (named !== undefined) return namedEntities[named]!
      const code = decimal !== undefined ? Number.parseInt(decimal, 10) : Number.parseInt(hex!, 16)
      if (code === 0) return ""
      return code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff) ? "\uFFFD" : String.fromCodePoint(code)
    }
  )

const namedEntities: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'" }

/** What a walk over XML is told: elements by their local name (prefix dropped), and character data. */
interface XmlVisitor {
  readonly open?: (name: string, attributes: string) => void
  readonly close?: (name: string) => void
  /** Character data, its entities not yet decoded. */
  readonly text?: (raw: string) => void
}

// A tag from its "<": the name, then attributes (a quoted value may hold ">", never "<"), then ">".
const tagSource = /<(\/?)([A-Za-z_][^\s/<>]*)((?:[^<>"']|"[^<"]*"|'[^<']*')*)>/.source

/**
 * Walks `xml` in document order until `done()`; an element written `<a/>` is opened and closed.
 * Comments, declarations and processing instructions are passed over. Lenient: a stray "<" is
 * skipped rather than refused. Linear in the length of `xml`, whatever it holds.
 */
const walkXml = (xml: string, visitor: XmlVisitor, done: () => boolean) => {
  const tag = new RegExp(tagSource, "y")
  let at = 0
  while (at < xml.length && !done()) {
    const next = xml.indexOf("<", at)
    if (next !== at) visitor.text?.(xml.slice(at, next < 0 ? xml.length : next))
    if (next < 0) break
    if (xml.startsWith("<!--", next)) {
      const end = xml.indexOf("-->", next + 4)
      if (end < 0) break
      at = end + 3
    } else if (xml.startsWith("<![CDATA[", next)) {
      const end = xml.indexOf("]]>", next + 9)
      if (end < 0) break
      visitor.text?.(xml.slice(next + 9, end).replace(/&/g, "&amp;"))
      at = end + 3
    } else if (xml[next + 1] === "?" || xml[next + 1] === "!") {
      const end = xml.indexOf(">", next)
      if (end < 0) break
      at = end + 1
    } else {
      tag.lastIndex = next
      const match = tag.exec(xml)
      if (match === null) {
        at = next + 1
        continue
      }
      const [, slash, qualified, attributes] = match
      const name = qualified!.slice(qualified!.indexOf(":") + 1)
      if (slash === "/") visitor.close?.(name)
      else {
        visitor.open?.(name, attributes!)
        if (attributes!.endsWith("/")) visitor.close?.(name)
      }
      at = tag.lastIndex
    }
  }
}

/** An element's attributes by qualified name, values decoded. */
const attributesOf = (raw: string): Map<string, string> => {
  const found = new Map<string, string>()
  for (const match of raw.matchAll(/([^\s=/]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    found.set(match[1]!, decodeXml(match[2] ?? match[3] ?? ""))
  }
  return found
}

/** The relationship id of an element that points at another part (`r:id`, whatever its prefix). */
const relationshipId = (attributes: Map<string, string>): string | undefined => {
  for (const [name, value] of attributes) if (name.endsWith(":id")) return value
  return undefined
}

// --- the document's parts

interface Relationship {
  readonly type: string
  /** The part it points at, as a name in the archive. */
  readonly target: string
}

/** The relationships of `part` (from `_rels/<name>.rels` beside it; `""` for the package's own), by id. */
const relationshipsOf = (archive: Archive, part: string): Map<string, Relationship> => {
  const slash = part.lastIndexOf("/")
  const directory = part.slice(0, slash + 1)
  const found = new Map<string, Relationship>()
  const xml = archive.xml(`${directory}_rels/${part.slice(slash + 1)}.rels`)
  if (xml === undefined) return found
  walkXml(xml, {
    open: (name, raw) => {
      if (name !== "Relationship") return
      const attributes = attributesOf(raw)
      const id = attributes.get("Id")
      const target = attributes.get("Target")
      if (id === undefined || target === undefined || attributes.get("TargetMode") === "External") return
      found.set(id, { type: attributes.get("Type") ?? "", target: resolvePart(directory, target) })
    }
  }, () => false)
  return found
}

/** A relationship's target, relative to the directory of the part it belongs to, as an archive name. */
const resolvePart = (directory: string, target: string): string => {
  const segments = target.startsWith("/") ? [] : directory.split("/").filter((segment) => segment.length > 0)
  for (const segment of target.split("/")) {
    if (segment === "..") segments.pop()
    else if (segment !== "." && segment.length > 0) segments.push(segment)
  }
  return segments.join("/")
}

const relationshipOfType = (relationships: Map<string, Relationship>, type: string) => {
  for (const relationship of relationships.values()) {
    if (relationship.type.endsWith(`/${type}`)) return relationship.target
  }
  return undefined
}

/**
 * The document's main part and its XML: the package's `officeDocument` relationship, else where
 * Office puts it; none whose root element is not `root` (a workbook is not read as a Word document).
 */
const mainPart = (archive: Archive, usual: string, root: string) => {
  const named = relationshipOfType(relationshipsOf(archive, ""), "officeDocument")
  for (const name of named === undefined || named === usual ? [usual] : [named, usual]) {
    const xml = archive.xml(name)
    if (xml !== undefined && rootOf(xml) === root) return { name, xml }
  }
  return undefined
}

/** The local name of an XML document's root element. */
const rootOf = (xml: string): string | undefined => {
  let found: string | undefined
  walkXml(xml, { open: (name) => (found ??= name) }, () => found !== undefined)
  return found
}

/** The parts whose names match `pattern`, by the number it captures (slide2 before slide10). */
const numbered = (archive: Archive, pattern: RegExp): Array<string> =>
  archive.names()
    .map((name) => [name, pattern.exec(name)?.[1]] as const)
    .filter((found): found is readonly [string, string] => found[1] !== undefined)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map(([name]) => name)

// --- the text

/**
 * Text gathered in pieces, until it reaches a length. Lines end with `endLine`: a blank line at
 * most, however many empty paragraphs (spacing, in a document) follow one another.
 */
class Gathered {
  private readonly pieces: Array<string> = []
  private length = 0
  private newlines = 0
  constructor(private readonly maxChars: number) {}
  get full(): boolean {
    return this.length >= this.maxChars
  }
  get last(): string | undefined {
    return this.pieces.at(-1)
  }
  add(piece: string) {
    if (piece.length === 0) return
    this.pieces.push(piece)
    this.length += piece.length
    this.newlines = 0
  }
  endLine() {
    if (this.newlines === 2) return
    this.pieces.push("\n")
    this.length += 1
    this.newlines += 1
  }
  /** Replaces the last piece (a separator) with another of the same length. */
  replaceLast(piece: "\t" | "\n") {
    this.pieces[this.pieces.length - 1] = piece
    this.newlines = piece === "\n" ? 1 : 0
  }
  /** The text, without the blank lines and spaces it starts or ends with. */
  text(): string {
    return this.pieces.join("").replace(/^\s*\n|\s+$/g, "")
  }
}

/** A document's sections (a body, its notes, slides, sheets), a blank line between each, up to a length. */
class Sections {
  private readonly texts: Array<string> = []
  private length = 0
  constructor(private readonly maxChars: number) {}
  get full(): boolean {
    return this.length >= this.maxChars
  }
  /** What is left of the length for the next section. */
  get room(): number {
    return this.maxChars - this.length
  }
  add(text: string) {
    if (text.length === 0) return
    this.texts.push(text)
    this.length += text.length + 2
  }
  text(): string {
    return this.texts.join("\n\n")
  }
}

/**
 * The text of WordprocessingML or DrawingML paragraphs (a Word document's body, a slide): the text
 * of runs (`t`), a tab inside a run (`tab`; outside one, it is a tab stop), a line per paragraph
 * (`p`) and line break (`br`, `cr`), a table's cells separated by tabs and its rows by lines.
 * Fallback content (`mc:Fallback`: what older readers show instead of a text box, say) repeats the
 * choice before it and is skipped.
 */
const paragraphsText = (xml: string, maxChars: number): string => {
  const into = new Gathered(maxChars)
  let runs = 0
  let inText = false
  let skipped = 0
  walkXml(xml, {
    open: (name) => {
      if (name === "Fallback") skipped++
      else if (skipped > 0) return
      else if (name === "r") runs++
      else if (name === "t") inText = true
      else if (runs > 0 && name === "tab") into.add("\t")
      else if (name === "br" || name === "cr") into.endLine()
    },
    close: (name) => {
      if (name === "Fallback") skipped--
      else if (skipped > 0) return
      else if (name === "r") runs = Math.max(0, runs - 1)
      else if (name === "t") inText = false
      else if (name === "p") into.endLine()
      else if (name === "tc" && into.last === "\n") into.replaceLast("\t")
      else if (name === "tr" && into.last === "\t") into.replaceLast("\n")
    },
    text: (raw) => {
      if (inText && skipped === 0) into.add(decodeXml(raw))
    }
  }, () => into.full)
  return into.text()
}

/** A Word document: its body, then its footnotes and endnotes. */
const wordText = (archive: Archive, into: Sections) => {
  const main = mainPart(archive, "word/document.xml", "document")
  if (main === undefined) throw new OfficeUnreadable("the archive has no word/document.xml: not a Word document")
  into.add(paragraphsText(main.xml, into.room))
  const relationships = relationshipsOf(archive, main.name)
  for (const type of ["footnotes", "endnotes"]) {
    const part = relationshipOfType(relationships, type)
    if (part === undefined || into.full) continue
    const xml = archive.xml(part)
    if (xml !== undefined) into.add(paragraphsText(xml, into.room))
  }
}

/** A presentation: each slide's text under a heading "Slide n", in the presentation's order. */
const presentationText = (archive: Archive, into: Sections) => {
  const presentation = mainPart(archive, "ppt/presentation.xml", "presentation")
  const listed: Array<string> = []
  if (presentation !== undefined) {
    const relationships = relationshipsOf(archive, presentation.name)
    walkXml(presentation.xml, {
      open: (name, raw) => {
        if (name !== "sldId") return
        const id = relationshipId(attributesOf(raw))
        const target = id === undefined ? undefined : relationships.get(id)?.target
        if (target !== undefined && archive.has(target)) listed.push(target)
      }
    }, () => false)
  }
  // Without the presentation's list, the slides' own numbers give the order.
  const slides = listed.length > 0 ? listed : numbered(archive, /^ppt\/slides\/slide(\d+)\.xml$/i)
  if (presentation === undefined && slides.length === 0) {
    throw new OfficeUnreadable("the archive has no ppt/presentation.xml or slides: not a presentation")
  }
  for (const [index, slide] of slides.entries()) {
    if (into.full) break
    const heading = `Slide ${index + 1}`
    const text = paragraphsText(archive.xml(slide)!, into.room - heading.length)
    into.add(text.length === 0 ? heading : `${heading}\n${text}`)
  }
}

/** The text of string items (`si`, or a cell's inline `is`): their runs' text, phonetic guides (`rPh`) left out. */
const stringItem = () => {
  let inText = false
  let phonetic = 0
  let current: Array<string> = []
  return {
    open: (name: string) => {
      if (name === "rPh") phonetic++
      else if (name === "t") inText = true
    },
    close: (name: string) => {
      if (name === "rPh") phonetic--
      else if (name === "t") inText = false
    },
    text: (raw: string) => {
      if (inText && phonetic === 0) current.push(decodeXml(raw))
    },
    /** The item's text so far, and a fresh start for the next. */
    take: (): string => {
      const text = current.join("")
      current = []
      return text
    }
  }
}

/** The column of a cell reference (`C7` is 3), `undefined` without one. */
const columnOf = (reference: string | undefined): number | undefined => {
  const letters = reference === undefined ? undefined : /^\$?([A-Za-z]{1,3})/.exec(reference)?.[1]
  if (letters === undefined) return undefined
  let column = 0
  for (const letter of letters.toUpperCase()) column = column * 26 + letter.charCodeAt(0) - 64
  return column
}

/** The shared strings of a workbook, by index. */
const sharedStrings = (xml: string | undefined): Array<string> => {
  const strings: Array<string> = []
  if (xml === undefined) return strings
  const item = stringItem()
  walkXml(xml, {
    open: item.open,
    close: (name) => {
      if (name === "si") strings.push(item.take())
      else item.close(name)
    },
    text: item.text
  }, () => false)
  return strings
}

/**
 * A worksheet's rows: a line per row, the cells separated by tabs in their columns (a cell skipped
 * before another is an empty field); shared strings resolved, inline strings, numbers as written,
 * booleans as TRUE and FALSE, formulas by their last value. Rows without a value are left out.
 */
const sheetText = (xml: string, shared: ReadonlyArray<string>, maxChars: number): string => {
  const into = new Gathered(maxChars)
  let cells: Array<string> = []
  let cell: { column: number | undefined; type: string; value: string } | undefined
  let inValue = false
  let inInline = false
  const inline = stringItem()
  walkXml(xml, {
    open: (name, raw) => {
      if (inInline) inline.open(name)
      else if (name === "row") cells = []
      else if (name === "c") {
        const attributes = attributesOf(raw)
        cell = { column: columnOf(attributes.get("r")), type: attributes.get("t") ?? "n", value: "" }
      } else if (name === "v") inValue = true
      else if (name === "is") inInline = true
    },
    close: (name) => {
      if (name === "is") {
        inInline = false
        if (cell !== undefined) cell.value = inline.take()
      } else if (inInline) inline.close(name)
      else if (name === "v") inValue = false
      else if (name === "c" && cell !== undefined) {
        const value = cell.type === "s"
          ? shared[Number(cell.value)] ?? ""
          : cell.type === "b"
          ? cell.value === "1" ? "TRUE" : cell.value === "0" ? "FALSE" : cell.value
          : cell.value
        const column = cell.column ?? cells.length + 1
        while (cells.length < column - 1) cells.push("")
        if (column > cells.length) cells.push(value)
        cell = undefined
      } else if (name === "row") {
        while (cells.length > 0 && cells.at(-1) === "") cells.pop()
        if (cells.length === 0) return
        into.add(cells.join("\t"))
        into.endLine()
      }
    },
    text: (raw) => {
      if (inInline) inline.text(raw)
      else if (inValue && cell !== undefined) cell.value += decodeXml(raw)
    }
  }, () => into.full)
  return into.text()
}

/** A workbook: each sheet with a value under a heading "Sheet: <name>", in the workbook's order. */
const workbookText = (archive: Archive, into: Sections) => {
  const workbook = mainPart(archive, "xl/workbook.xml", "workbook")
  const relationships = workbook === undefined
    ? new Map<string, Relationship>()
    : relationshipsOf(archive, workbook.name)
  const sheets: Array<{ readonly name: string; readonly part: string }> = []
  if (workbook !== undefined) {
    walkXml(workbook.xml, {
      open: (name, raw) => {
        if (name !== "sheet") return
        const attributes = attributesOf(raw)
        const id = relationshipId(attributes)
        const target = id === undefined ? undefined : relationships.get(id)?.target
        if (target !== undefined && archive.has(target)) {
          sheets.push({ name: attributes.get("name") ?? `Sheet${sheets.length + 1}`, part: target })
        }
      }
    }, () => false)
  }
  // Without the workbook's list, the worksheets' own numbers give the order.
  if (sheets.length === 0) {
    for (const [index, part] of numbered(archive, /^xl\/worksheets\/sheet(\d+)\.xml$/i).entries()) {
      sheets.push({ name: `Sheet${index + 1}`, part })
    }
  }
  if (workbook === undefined && sheets.length === 0) {
    throw new OfficeUnreadable("the archive has no xl/workbook.xml or worksheets: not a workbook")
  }
  const shared = sharedStrings(
    archive.xml(relationshipOfType(relationships, "sharedStrings") ?? "xl/sharedStrings.xml")
  )
  for (const sheet of sheets) {
    if (into.full) break
    const heading = `Sheet: ${sheet.name}`
    const text = sheetText(archive.xml(sheet.part)!, shared, into.room - heading.length)
    if (text.length > 0) into.add(`${heading}\n${text}`)
  }
}

/**
 * The text of an Office Open XML document of `kind`, as a reader reads it: in order, a line per
 * paragraph and per table row, tabs where the document has them and between a row's cells.
 * @throws OfficeUnreadable when the archive, or the document in it, cannot be read
 */
export const readOfficeText = (bytes: Uint8Array, kind: OfficeKind, limits: OfficeLimits): string => {
  const archive = openArchive(bytes, limits)
  const into = new Sections(limits.maxChars)
  if (kind === "docx") wordText(archive, into)
  else if (kind === "pptx") presentationText(archive, into)
  else workbookText(archive, into)
  return into.text()
}
