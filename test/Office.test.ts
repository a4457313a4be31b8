/**
 * The text of Word, Excel and PowerPoint documents, read on a worker thread from archives built
 * here: what is read and in what order, and every way an archive is refused (`TextUnreadable`, with
 * its reason) instead of read: not a ZIP, truncated, damaged, too many entries, a part too large
 * or lying about its size.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as Zlib from "node:zlib"
import { officeLimits, officeText } from "../src/Files/Office.js"
import {
  docxOf,
  officeTypes,
  pptxOf,
  slideXml,
  wordDocumentXml,
  wordParagraph,
  xlsxOf,
  type ZipEntry,
  zipOf
} from "./fixtures/Documents.js"

const word = officeTypes.docx

/** The text of `bytes` as a document of `type`, which must be readable. */
const read = (bytes: Uint8Array, type: string = word, maxChars = 100_000) => officeText(bytes, type, maxChars)

/** Why `bytes` cannot be read as a document of `type`. */
const refusal = (bytes: Uint8Array, type: string = word) =>
  Effect.map(Effect.flip(officeText(bytes, type, 100_000)), (error) => {
    expect(error._tag).toBe("TextUnreadable")
    return error.reason
  })

/** `archive` with the central directory's record of `name` (its 46 bytes before the name) changed by `change`. */
const withDirectoryEntry = (archive: Uint8Array, name: string, change: (header: Buffer) => void) => {
  const copy = Buffer.from(archive)
  const at = copy.lastIndexOf(Buffer.from(name)) - 46
  expect(copy.readUInt32LE(at)).toBe(0x02014b50)
  change(copy.subarray(at, at + 46))
  return new Uint8Array(copy)
}

describe("Word documents", () => {
  it.live("paragraphs as lines in document order; tabs and breaks inside runs; tables a row per line", () =>
    Effect.gen(function*() {
      const body = wordParagraph("First paragraph.") +
        // A tab stop (in the paragraph's properties) is not a tab; a tab and breaks inside a run are.
        `<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>` +
        `<w:r><w:t>Name</w:t><w:tab/><w:t>Value</w:t><w:br/><w:t>next line</w:t><w:cr/><w:t>and another</w:t></w:r>` +
        `<w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve"> in bold</w:t></w:r></w:p>` +
        // A field's code and deleted text are not what a reader reads.
        `<w:p><w:r><w:instrText> PAGE </w:instrText></w:r><w:r><w:t>Page</w:t></w:r>` +
        `<w:del><w:r><w:delText>removed</w:delText></w:r></w:del><w:ins><w:r><w:t xml:space="preserve"> one</w:t></w:r></w:ins></w:p>` +
        `<w:tbl><w:tr><w:tc><w:p><w:r><w:t>A1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>B1</w:t></w:r></w:p></w:tc></w:tr>` +
        `<w:tr><w:tc><w:p/></w:tc><w:tc><w:p><w:r><w:t>B2</w:t></w:r></w:p></w:tc></w:tr></w:tbl>` +
        // A text box is written twice: for readers that know it, and as a fallback for those that do not.
        `<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>Boxed</w:t></mc:Choice>` +
        `<mc:Fallback><w:t>Boxed again</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>` +
        wordParagraph("Last paragraph.")
      expect(yield* read(docxOf(body))).toBe(
        "First paragraph.\nName\tValue\nnext line\nand another in bold\nPage one\nA1\tB1\n\tB2\nBoxed\nLast paragraph."
      )
    }))

  it.live("entities decoded: the five named ones, decimal and hexadecimal references", () =>
    Effect.gen(function*() {
      const body = `<w:p><w:r><w:t>Fish &amp; chips &lt;b&gt; &quot;quoted&quot; &apos;single&apos; ` +
        `&#169; &#xE9; &#x1F600; &amp;amp;</w:t></w:r></w:p>`
      expect(yield* read(docxOf(body))).toBe(`Fish & chips <b> "quoted" 'single' © é 😀 &amp;`)
      // Written by the fixture's escaping, read back as they were.
      expect(yield* read(docxOf(wordParagraph(`a < b & c > "d"`)))).toBe(`a < b & c > "d"`)
    }))

  it.live("footnotes after the body; stored and deflated parts read alike", () =>
    Effect.gen(function*() {
      const footnotes = `<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>` +
        `<w:footnote w:id="1"><w:p><w:r><w:t>A note.</w:t></w:r></w:p></w:footnote>`
      const body = wordParagraph("The body.") + wordParagraph("Its end.")
      const expected = "The body.\nIts end.\n\nA note."
      expect(yield* read(docxOf(body, { footnotes }))).toBe(expected)
      expect(yield* read(docxOf(body, { footnotes, method: "stored" }))).toBe(expected)
    }))

  it.live("stops once the text reaches the caller's maxChars", () =>
    Effect.gen(function*() {
      const lines = Array.from({ length: 2_000 }, (_, index) => `Paragraph number ${index}.`)
      const document = docxOf(lines.map(wordParagraph).join(""))
      const whole = yield* read(document)
      expect(whole).toBe(lines.join("\n"))
      const cut = yield* read(document, word, 1_000)
      expect(cut.length).toBeGreaterThanOrEqual(1_000)
      expect(cut.length).toBeLessThan(1_100)
      expect(whole.startsWith(cut)).toBe(true)
    }))
})

describe("Excel workbooks", () => {
  it.live("sheets in the workbook's order under their names; a row per line, cells by tabs in their columns", () =>
    Effect.gen(function*() {
      const budget = `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>` +
        `<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" s="1"><v>1250.5</v></c></row>` +
        // Empty rows, and cells without a value, are left out; a cell skipped is an empty field.
        `<row r="3"/><row r="4"><c r="A4" s="2"/></row>` +
        `<row r="5"><c r="A5" t="inlineStr"><is><t>Total &amp; tax</t></is></c><c r="C5"><f>SUM(B2:B4)</f><v>1.5E3</v></c>` +
        `<c r="D5" t="b"><v>1</v></c><c r="E5" t="b"><v>0</v></c><c r="F5" t="e"><v>#DIV/0!</v></c>` +
        `<c r="G5" t="str"><f>A2&amp;"!"</f><v>Rent!</v></c></row>`
      // Rich text in runs is one string; a phonetic guide is not read.
      const notes = `<row r="2"><c r="B2" t="inlineStr"><is><r><t>Rich </t></r><r><rPr><b/></rPr><t>text</t></r>` +
        `<rPh sb="0" eb="1"><t>ふりがな</t></rPh></is></c></row>`
      const workbook = xlsxOf(
        [{ name: "Budget <2025>", rows: budget }, { name: "Empty", rows: "" }, { name: "Notes", rows: notes }],
        ["Item", "Amount", "Rent"]
      )
      expect(yield* read(workbook, officeTypes.xlsx)).toBe(
        "Sheet: Budget <2025>\nItem\tAmount\nRent\t1250.5\nTotal & tax\t\t1.5E3\tTRUE\tFALSE\t#DIV/0!\tRent!\n\n" +
          "Sheet: Notes\n\tRich text"
      )
    }))

  it.live("without a workbook's list, worksheets in the order of their numbers", () =>
    Effect.gen(function*() {
      const sheet = (text: string) =>
        `<worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>${text}</t></is></c></row></sheetData></worksheet>`
      const workbook = zipOf([
        { name: "xl/worksheets/sheet10.xml", content: sheet("ten") },
        { name: "xl/worksheets/sheet2.xml", content: sheet("two") },
        { name: "xl/worksheets/sheet1.xml", content: sheet("one") }
      ])
      expect(yield* read(workbook, officeTypes.xlsx)).toBe(
        "Sheet: Sheet1\none\n\nSheet: Sheet2\ntwo\n\nSheet: Sheet3\nten"
      )
    }))
})

describe("PowerPoint presentations", () => {
  it.live("slides in order, slide 10 after slide 2, each under its heading; paragraphs and breaks as lines", () =>
    Effect.gen(function*() {
      const slides = Array.from({ length: 11 }, (_, index) => [`Title ${index + 1}`, `Point ${index + 1} & more`])
      const text = yield* read(pptxOf(slides), officeTypes.pptx)
      expect(text.split("\n\n")).toEqual(
        slides.map((lines, index) => `Slide ${index + 1}\n${lines.join("\n")}`)
      )
      const broken = zipOf([{
        name: "ppt/slides/slide1.xml",
        content: slideXml([]).replace(
          "<a:lstStyle/>",
          "<a:lstStyle/><a:p><a:r><a:t>One</a:t></a:r><a:br/><a:r><a:t>line later</a:t></a:r></a:p>"
        )
      }])
      expect(yield* read(broken, officeTypes.pptx)).toBe("Slide 1\nOne\nline later")
    }))

  it.live("the presentation's own order, when it differs from the slides' file numbers", () =>
    Effect.gen(function*() {
      const presentation = pptxOf([["Made first"], ["Made second"], ["Made third"]], [3, 1, 2])
      expect(yield* read(presentation, officeTypes.pptx)).toBe(
        "Slide 1\nMade third\n\nSlide 2\nMade first\n\nSlide 3\nMade second"
      )
    }))

  it.live("without the presentation's list, slides in the order of their numbers", () =>
    Effect.gen(function*() {
      const presentation = zipOf(
        [10, 2, 1].map((number): ZipEntry => ({
          name: `ppt/slides/slide${number}.xml`,
          content: slideXml([`File ${number}`])
        }))
      )
      expect(yield* read(presentation, officeTypes.pptx)).toBe(
        "Slide 1\nFile 1\n\nSlide 2\nFile 2\n\nSlide 3\nFile 10"
      )
    }))
})

describe("refused archives", () => {
  it.live("not a ZIP archive at all", () =>
    Effect.gen(function*() {
      expect(yield* refusal(new TextEncoder().encode("Just some text, not an archive."))).toBe(
        "not a ZIP archive, or a truncated one (no end of central directory)"
      )
      expect(yield* refusal(new Uint8Array(0))).toMatch(/^not a ZIP archive/)
    }))

  it.live("truncated: its end cut off, or its directory pointing past the data", () =>
    Effect.gen(function*() {
      const document = docxOf(wordParagraph("Whole."))
      expect(yield* refusal(document.subarray(0, document.length - 30))).toMatch(
        /^not a ZIP archive, or a truncated one/
      )
      // The end record kept, most of what comes before it gone.
      const end = document.subarray(document.length - 22)
      expect(yield* refusal(new Uint8Array(Buffer.concat([document.subarray(0, 100), end])))).toBe(
        "the archive is truncated"
      )
      // An entry's data said to run past the end of the file.
      const overlong = withDirectoryEntry(document, "word/document.xml", (header) => header.writeUInt32LE(1e6, 20))
      expect(yield* refusal(overlong)).toBe("the archive is truncated")
    }))

  it.live("damaged: data that does not inflate, a checksum that differs; encrypted", () =>
    Effect.gen(function*() {
      const garbage = new Uint8Array(Buffer.from("this is not deflate data at all, not at all"))
      const badDeflate = zipOf([
        { name: "word/document.xml", content: "<w:document/>", data: garbage, declaredSize: 13 }
      ])
      expect(yield* refusal(badDeflate)).toMatch(/^word\/document\.xml is damaged \(/)
      const stored = Buffer.from(docxOf(wordParagraph("Checksummed text."), { method: "stored" }))
      stored.write("Chequesummed", stored.indexOf("Checksummed"))
      expect(yield* refusal(new Uint8Array(stored))).toBe("word/document.xml is damaged (its checksum differs)")
      const encrypted = withDirectoryEntry(
        docxOf(wordParagraph("Secret.")),
        "word/document.xml",
        (header) => header.writeUInt16LE(header.readUInt16LE(8) | 1, 8)
      )
      expect(yield* refusal(encrypted)).toBe("word/document.xml is encrypted")
    }))

  it.live("more entries than the limit", () =>
    Effect.gen(function*() {
      const entries = Array.from(
        { length: officeLimits.maxEntries + 1 },
        (_, index): ZipEntry => ({ name: `word/media/${index}.txt`, content: "", method: "stored" })
      )
      expect(yield* refusal(zipOf(entries))).toBe("the archive has more than 10000 entries")
      expect(
        yield* read(zipOf([
          ...entries.slice(2),
          { name: "word/document.xml", content: wordDocumentXml(wordParagraph("Within the limit.")) }
        ]))
      ).toBe("Within the limit.")
    }))

  it.live("a part over the size limit, as declared or once inflated (a zip bomb declaring a small size)", () =>
    Effect.gen(function*() {
      const tooLarge = officeLimits.maxPartBytes + 1
      const zeros = Zlib.deflateRawSync(Buffer.alloc(tooLarge))
      // Honest about its size: refused before it is inflated.
      const declared = zipOf([{ name: "word/document.xml", content: "", data: zeros, declaredSize: tooLarge }])
      expect(yield* refusal(declared)).toBe("word/document.xml is over 52428800 bytes inflated")
      // Lying about it: inflating stops one byte past what it declares.
      const bomb = zipOf([{ name: "word/document.xml", content: "", data: zeros, declaredSize: 1_000 }])
      expect(bomb.length).toBeLessThan(100_000)
      expect(yield* refusal(bomb)).toBe("word/document.xml inflates to more than the 1000 bytes it declares")
    }))

  it.live("ZIP64 archives, and archives without the document's part", () =>
    Effect.gen(function*() {
      const document = Buffer.from(docxOf(wordParagraph("Text.")))
      document.writeUInt16LE(0xffff, document.length - 12)
      document.writeUInt16LE(0xffff, document.length - 14)
      expect(yield* refusal(new Uint8Array(document))).toBe("ZIP64 archives are not read")
      const workbook = xlsxOf([{ name: "Sheet1", rows: "" }])
      expect(yield* refusal(workbook, word)).toBe("the archive has no word/document.xml: not a Word document")
      const other = zipOf([{ name: "notes.txt", content: "Not an office document." }])
      expect(yield* refusal(other, officeTypes.pptx)).toBe(
        "the archive has no ppt/presentation.xml or slides: not a presentation"
      )
      expect(yield* refusal(other, officeTypes.xlsx)).toBe(
        "the archive has no xl/workbook.xml or worksheets: not a workbook"
      )
    }))
})

describe("the worker thread", () => {
  it.live("a large document is read without holding up the event loop", () =>
    Effect.gen(function*() {
      // 48 MiB of markup around empty runs: about 0.35 s of parsing, none of it on this thread.
      const paragraph =
        `<w:p><w:pPr><w:spacing w:after="0"/></w:pPr><w:r><w:rPr><w:b/><w:i/></w:rPr><w:t></w:t></w:r></w:p>`
      const document = docxOf(
        paragraph.repeat(Math.ceil(48 * 1024 * 1024 / paragraph.length)) + wordParagraph("The end.")
      )
      const delay = monitorEventLoopDelay({ resolution: 5 })
      delay.enable()
      const text = yield* read(document)
      delay.disable()
      expect(text.trim()).toBe("The end.")
      expect(delay.max / 1e6).toBeLessThan(100)
    }))

  it.live("a type that is not an office document is refused without a worker", () =>
    Effect.gen(function*() {
      expect(Either.isLeft(yield* Effect.either(officeText(new Uint8Array(10), "application/pdf", 10)))).toBe(true)
    }))
})
