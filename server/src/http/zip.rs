//! A ZIP archive of stored (uncompressed) files, written front to back as a stream: local headers with
//! their files as they come, then the central directory, then its end records, with ZIP64 records
//! wherever a size, an offset or the count of files outgrows the classic format.
//!
//! It keeps no record per file: the central directory is written by a second pass over the same files
//! in the same order ([`ZipStream::directory_record`]), which recomputes each file's CRC-32 and offset.
//! So an archive of millions of files takes a few counters of memory, and the caller decides where the
//! files come from both times. Nothing here does IO.

/// The longest file name an archive can hold.
pub const MAX_NAME_BYTES: usize = u16::MAX as usize;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
/// Names are UTF-8 (general purpose flag bit 11).
const UTF8_NAMES: u16 = 1 << 11;
/// Version 2.0 reads stored files; 4.5 is needed for ZIP64 records.
const VERSION_PLAIN: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Made by Unix (3), specification 4.5: the external attributes are Unix modes.
const MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
/// A regular file, `rw-r--r--`.
const FILE_MODE: u32 = 0o100_644 << 16;
/// The largest value a classic 32-bit field holds; it also marks "see the ZIP64 extra field".
const SATURATED_32: u64 = u32::MAX as u64;
const SATURATED_16: u64 = u16::MAX as u64;

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZipError {
    #[error("a file name of {0} bytes is longer than a ZIP archive can hold")]
    NameTooLong(usize),
    #[error("the central directory does not match the files written: {0}")]
    Inconsistent(&'static str),
}

/// A time as ZIP stores it (MS-DOS date and time, two-second resolution, no time zone: UTC here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosTime {
    time: u16,
    date: u16,
}

impl DosTime {
    /// The time `unix_ms` milliseconds after the Unix epoch, within what the format holds (1980–2107).
    pub fn from_unix_ms(unix_ms: u64) -> DosTime {
        let (year, month, day) = crate::format::civil_date(unix_ms / 86_400_000);
        if year < 1980 {
            return DosTime { time: 0, date: (1 << 5) | 1 };
        }
        if year > 2107 {
            return DosTime { time: (23 << 11) | (59 << 5) | 29, date: (127 << 9) | (12 << 5) | 31 };
        }
        let seconds = (unix_ms / 1000) % 86_400;
        let time = ((seconds / 3600) << 11) | (((seconds / 60) % 60) << 5) | ((seconds % 60) / 2);
        let date = ((year - 1980) << 9) | (u64::from(month) << 5) | u64::from(day);
        DosTime { time: time as u16, date: date as u16 }
    }
}

/// An archive being written. Call [`ZipStream::file_header`] for each file (its contents follow the
/// header), then [`ZipStream::directory_record`] for the same files in the same order, then
/// [`ZipStream::end`].
#[derive(Debug)]
pub struct ZipStream {
    modified: DosTime,
    /// Bytes of the archive so far.
    written: u64,
    files: u64,
    directory: Option<Directory>,
}

/// The second pass: where the central directory began, and where the next file's local header was.
#[derive(Debug)]
struct Directory {
    start: u64,
    records: u64,
    next_local_header: u64,
}

impl ZipStream {
    /// An archive whose files all carry `modified` as their time.
    pub fn new(modified: DosTime) -> ZipStream {
        ZipStream { modified, written: 0, files: 0, directory: None }
    }

    /// The bytes of the archive written so far.
    #[cfg(test)]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The local header of the next file; `contents` follow it in the archive.
    pub fn file_header(&mut self, name: &str, contents: &[u8]) -> Result<Vec<u8>, ZipError> {
        self.local_header(name, contents.len() as u64, crc32fast::hash(contents))
    }

    fn local_header(&mut self, name: &str, size: u64, crc: u32) -> Result<Vec<u8>, ZipError> {
        if self.directory.is_some() {
            return Err(ZipError::Inconsistent("a file came after the central directory began"));
        }
        check_name(name)?;
        let zip64 = size >= SATURATED_32;
        let mut header = Vec::with_capacity(local_header_bytes(name, size) as usize);
        put32(&mut header, LOCAL_HEADER);
        put16(&mut header, if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN });
        self.put_common(&mut header, crc);
        put32(&mut header, size.min(SATURATED_32) as u32);
        put32(&mut header, size.min(SATURATED_32) as u32);
        put16(&mut header, name.len() as u16);
        put16(&mut header, if zip64 { 20 } else { 0 });
        header.extend_from_slice(name.as_bytes());
        if zip64 {
            // A local header's ZIP64 field holds both sizes.
            put16(&mut header, 0x0001);
            put16(&mut header, 16);
            put64(&mut header, size);
            put64(&mut header, size);
        }
        self.written += header.len() as u64 + size;
        self.files += 1;
        Ok(header)
    }

    /// The central directory's record of the next file: the same names and contents, in the same order,
    /// as were given to [`ZipStream::file_header`].
    pub fn directory_record(&mut self, name: &str, contents: &[u8]) -> Result<Vec<u8>, ZipError> {
        self.central_header(name, contents.len() as u64, crc32fast::hash(contents))
    }

    fn central_header(&mut self, name: &str, size: u64, crc: u32) -> Result<Vec<u8>, ZipError> {
        check_name(name)?;
        let written = self.written;
        let directory = self.directory.get_or_insert(Directory { start: written, records: 0, next_local_header: 0 });
        let offset = directory.next_local_header;
        directory.next_local_header += local_header_bytes(name, size) + size;
        directory.records += 1;
        if directory.records > self.files || directory.next_local_header > directory.start {
            return Err(ZipError::Inconsistent("more files in the directory than were written"));
        }
        let mut extra = Vec::new();
        if size >= SATURATED_32 {
            put64(&mut extra, size);
            put64(&mut extra, size);
        }
        if offset >= SATURATED_32 {
            put64(&mut extra, offset);
        }
        let zip64 = !extra.is_empty();
        let mut record = Vec::with_capacity(46 + name.len() + 4 + extra.len());
        put32(&mut record, CENTRAL_HEADER);
        put16(&mut record, MADE_BY);
        put16(&mut record, if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN });
        self.put_common(&mut record, crc);
        put32(&mut record, size.min(SATURATED_32) as u32);
        put32(&mut record, size.min(SATURATED_32) as u32);
        put16(&mut record, name.len() as u16);
        put16(&mut record, if zip64 { extra.len() as u16 + 4 } else { 0 });
        put16(&mut record, 0); // comment
        put16(&mut record, 0); // disk
        put16(&mut record, 0); // internal attributes
        put32(&mut record, FILE_MODE);
        put32(&mut record, offset.min(SATURATED_32) as u32);
        record.extend_from_slice(name.as_bytes());
        if zip64 {
            put16(&mut record, 0x0001);
            put16(&mut record, extra.len() as u16);
            record.extend_from_slice(&extra);
        }
        self.written += record.len() as u64;
        Ok(record)
    }

    /// The end of the archive: the end of central directory record, after the ZIP64 ones if the count of
    /// files, the directory's size or its offset need them.
    pub fn end(self) -> Result<Vec<u8>, ZipError> {
        let (start, records) = match &self.directory {
            None => (self.written, 0),
            Some(directory) => {
                if directory.next_local_header != directory.start {
                    return Err(ZipError::Inconsistent("the directory's files do not add up to the files written"));
                }
                (directory.start, directory.records)
            }
        };
        if records != self.files {
            return Err(ZipError::Inconsistent("fewer files in the directory than were written"));
        }
        let size = self.written - start;
        let mut end = Vec::with_capacity(98);
        if records >= SATURATED_16 || size >= SATURATED_32 || start >= SATURATED_32 {
            let zip64_end = self.written;
            put32(&mut end, ZIP64_END);
            put64(&mut end, 44); // the rest of this record
            put16(&mut end, MADE_BY);
            put16(&mut end, VERSION_ZIP64);
            put32(&mut end, 0); // this disk
            put32(&mut end, 0); // the directory's disk
            put64(&mut end, records);
            put64(&mut end, records);
            put64(&mut end, size);
            put64(&mut end, start);
            put32(&mut end, ZIP64_LOCATOR);
            put32(&mut end, 0);
            put64(&mut end, zip64_end);
            put32(&mut end, 1); // disks
        }
        put32(&mut end, END);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, records.min(SATURATED_16) as u16);
        put16(&mut end, records.min(SATURATED_16) as u16);
        put32(&mut end, size.min(SATURATED_32) as u32);
        put32(&mut end, start.min(SATURATED_32) as u32);
        put16(&mut end, 0); // comment
        Ok(end)
    }

    /// Flags, method (stored), time, date and CRC-32: the same in both headers.
    fn put_common(&self, header: &mut Vec<u8>, crc: u32) {
        put16(header, UTF8_NAMES);
        put16(header, 0);
        put16(header, self.modified.time);
        put16(header, self.modified.date);
        put32(header, crc);
    }
}

fn check_name(name: &str) -> Result<(), ZipError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(ZipError::NameTooLong(name.len()));
    }
    Ok(())
}

/// The bytes of a file's local header.
fn local_header_bytes(name: &str, size: u64) -> u64 {
    30 + name.len() as u64 + if size >= SATURATED_32 { 20 } else { 0 }
}

fn put16(buffer: &mut Vec<u8>, value: u16) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put32(buffer: &mut Vec<u8>, value: u32) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// An archive of `files` written in two passes, as the server streams it.
    fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut zip = ZipStream::new(DosTime::from_unix_ms(1_700_000_000_000));
        let mut bytes = Vec::new();
        for (name, contents) in files {
            bytes.extend(zip.file_header(name, contents).unwrap());
            bytes.extend_from_slice(contents);
        }
        for (name, contents) in files {
            bytes.extend(zip.directory_record(name, contents).unwrap());
        }
        assert_eq!(zip.written(), bytes.len() as u64);
        bytes.extend(zip.end().unwrap());
        bytes
    }

    #[test]
    fn an_archive_reads_back_file_for_file() {
        let files = vec![
            ("0/stdout".to_owned(), b"hello\n".to_vec()),
            ("0/stderr".to_owned(), Vec::new()),
            ("0/files/sub/dir/ü.bin".to_owned(), (0..=255).collect()),
        ];
        let bytes = archive(&files);
        let mut reader = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.len(), files.len());
        for (index, (name, contents)) in files.iter().enumerate() {
            let mut file = reader.by_index(index).unwrap();
            assert_eq!(file.name(), name);
            assert_eq!(file.compression(), zip::CompressionMethod::Stored);
            let mut read = Vec::new();
            file.read_to_end(&mut read).unwrap();
            assert_eq!(&read, contents, "{name}");
            assert_eq!(file.unix_mode(), Some(0o100_644));
        }
    }

    #[test]
    fn an_empty_archive_is_valid() {
        let reader = zip::ZipArchive::new(std::io::Cursor::new(archive(&[]))).unwrap();
        assert_eq!(reader.len(), 0);
    }

    #[test]
    fn more_than_65535_files_take_zip64_end_records() {
        let files: Vec<(String, Vec<u8>)> =
            (0..70_000u32).map(|index| (format!("{index}/stdout"), index.to_le_bytes().to_vec())).collect();
        let bytes = archive(&files);
        // The ZIP64 end record and its locator precede the classic end record, whose counts saturate.
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(&end[..4], &END.to_le_bytes());
        assert_eq!(&end[8..12], &[0xff; 4]);
        assert_eq!(&bytes[bytes.len() - 42..bytes.len() - 38], &ZIP64_LOCATOR.to_le_bytes());
        let mut reader = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.len(), 70_000);
        for index in [0u32, 65_535, 65_536, 69_999] {
            let mut file = reader.by_index(index as usize).unwrap();
            assert_eq!(file.name(), format!("{index}/stdout"));
            let mut read = Vec::new();
            file.read_to_end(&mut read).unwrap();
            assert_eq!(read, index.to_le_bytes());
        }
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn files_of_4_gib_and_offsets_past_4_gib_take_zip64_fields() {
        // Only headers are built (sizes given, not contents): 5 GiB of memory is not needed to check them.
        let (big, small) = (5 << 30, 3);
        let mut zip = ZipStream::new(DosTime::from_unix_ms(0));
        let header = zip.local_header("big", big, 7).unwrap();
        assert_eq!((u32_at(&header, 18), u32_at(&header, 22)), (u32::MAX, u32::MAX), "sizes saturate");
        assert_eq!((u16_at(&header, 4), u16_at(&header, 28)), (VERSION_ZIP64, 20));
        assert_eq!((u16_at(&header, 33), u64_at(&header, 37), u64_at(&header, 45)), (1, big, big));
        let plain = zip.local_header("small", small, 8).unwrap();
        assert_eq!((u32_at(&plain, 18), u16_at(&plain, 28)), (small as u32, 0), "a small file needs no ZIP64 field");
        let directory_start = zip.written();
        assert_eq!(directory_start, (30 + 3 + 20 + big) + (30 + 5 + small));
        let record = zip.central_header("big", big, 7).unwrap();
        assert_eq!(u16_at(&record, 30), 20, "both sizes, no offset");
        assert_eq!((u64_at(&record, 46 + 3 + 4), u64_at(&record, 46 + 3 + 12)), (big, big));
        assert_eq!(u32_at(&record, 42), 0, "the first file is at 0");
        let record = zip.central_header("small", small, 8).unwrap();
        assert_eq!((u32_at(&record, 20), u32_at(&record, 42)), (small as u32, u32::MAX), "the offset saturates");
        assert_eq!((u16_at(&record, 30), u64_at(&record, 46 + 5 + 4)), (12, 30 + 3 + 20 + big));
        let end = zip.end().unwrap();
        // ZIP64 end record (56 bytes), its locator (20) and the classic end record (22).
        assert_eq!(end.len(), 56 + 20 + 22);
        assert_eq!(u32_at(&end, 0), ZIP64_END);
        assert_eq!((u64_at(&end, 24), u64_at(&end, 48)), (2, directory_start));
        assert_eq!((u32_at(&end, 56), u64_at(&end, 64)), (ZIP64_LOCATOR, directory_start + 46 + 3 + 20 + 46 + 5 + 12));
        assert_eq!((u32_at(&end, 76), u16_at(&end, 86), u32_at(&end, 92)), (END, 2, u32::MAX));
    }

    #[test]
    fn a_directory_that_does_not_match_the_files_is_refused() {
        let mut zip = ZipStream::new(DosTime::from_unix_ms(0));
        zip.file_header("a", b"1").unwrap();
        zip.file_header("b", b"2").unwrap();
        zip.directory_record("a", b"1").unwrap();
        assert!(matches!(zip.end(), Err(ZipError::Inconsistent(_))));
        let mut zip = ZipStream::new(DosTime::from_unix_ms(0));
        zip.file_header("a", b"1").unwrap();
        zip.directory_record("a", b"1").unwrap();
        assert!(zip.directory_record("b", b"2").is_err());
    }

    #[test]
    fn dos_times_are_utc_and_clamped_to_the_format() {
        // 2023-11-14 22:13:20 UTC.
        let time = DosTime::from_unix_ms(1_700_000_000_000);
        assert_eq!(time.date, ((2023 - 1980) << 9) | (11 << 5) | 14);
        assert_eq!(time.time, (22 << 11) | (13 << 5) | 10);
        assert_eq!(DosTime::from_unix_ms(0).date, (1 << 5) | 1);
    }
}
