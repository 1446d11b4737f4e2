//! DNS messages as mDNS and DNS-SD use them (RFC 1035 section 4, RFC 6762, RFC 6763): what
//! edgemon announces and asks, built, and what other hosts send, parsed as untrusted input
//! (bounded counts, names and compression pointers that can only point backwards).

use std::net::Ipv4Addr;

/// An IPv4 address.
pub const TYPE_A: u16 = 1;
/// A pointer: a service type to its instances.
pub const TYPE_PTR: u16 = 12;
/// Text: key=value strings.
pub const TYPE_TXT: u16 = 16;
/// Service location: port and target host.
pub const TYPE_SRV: u16 = 33;
/// Any type (in a question).
pub const TYPE_ANY: u16 = 255;
/// The Internet class.
const CLASS_IN: u16 = 1;
/// In a record's class: this record replaces what caches hold for its name and type.
const CACHE_FLUSH: u16 = 0x8000;
/// In a question's class: a unicast answer is wanted.
const UNICAST: u16 = 0x8000;
/// A response.
const FLAG_RESPONSE: u16 = 0x8000;
/// An authoritative answer (every mDNS response).
const FLAG_AUTHORITATIVE: u16 = 0x0400;
/// Longest name (RFC 1035 2.3.4), dots included.
pub const MAX_NAME: usize = 255;
/// Longest label.
pub const MAX_LABEL: usize = 63;
/// Most questions read from one message.
const MAX_QUESTIONS: usize = 64;
/// Most records read from one message (answers, authority and additional together).
const MAX_RECORDS: usize = 256;
/// Most compression pointers followed in one name.
const MAX_JUMPS: usize = 16;

/// A name as labels joined by dots (a label's own dots are kept, so "a.b" as one label and as
/// two read the same: names are only compared with each other and with edgemon's own).
pub type Name = String;

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    /// The QU bit: the asker wants a unicast answer.
    pub unicast: bool,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Ptr(Name),
    Srv {
        port: u16,
        target: Name,
    },
    /// Its strings, each at most 255 bytes (lossily UTF-8).
    Txt(Vec<String>),
    /// A type edgemon does not read.
    Other(u16),
}

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub ttl: u32,
    pub data: Data,
}

/// A parsed message: its questions and all its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub questions: Vec<Question>,
    pub records: Vec<Record>,
}

/// Why a message was not read.
pub type Error = &'static str;

/// Reads a message. Every count, length and pointer is checked against the buffer; a
/// message with more than `MAX_QUESTIONS` questions or `MAX_RECORDS` records is refused.
pub fn parse(buf: &[u8]) -> Result<Message, Error> {
    let mut r = Reader { buf, at: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()? as usize;
    let rr = r.u16()? as usize + r.u16()? as usize + r.u16()? as usize;
    if qd > MAX_QUESTIONS {
        return Err("too many questions");
    }
    if rr > MAX_RECORDS {
        return Err("too many records");
    }
    let mut questions = Vec::with_capacity(qd);
    for _ in 0..qd {
        let name = r.name()?;
        let qtype = r.u16()?;
        let class = r.u16()?;
        questions.push(Question {
            name,
            qtype,
            unicast: class & UNICAST != 0,
        });
    }
    let mut records = Vec::with_capacity(rr);
    for _ in 0..rr {
        let name = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let ttl = r.u32()?;
        let len = r.u16()? as usize;
        let end = r.at.checked_add(len).filter(|e| *e <= buf.len());
        let end = end.ok_or("record data past the end")?;
        let data = match rtype {
            TYPE_A if len == 4 => {
                let b = &buf[r.at..end];
                Data::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            TYPE_A => return Err("an A record that is not 4 bytes"),
            TYPE_PTR => Data::Ptr(Reader { buf, at: r.at }.name()?),
            TYPE_SRV => {
                let mut d = Reader { buf, at: r.at };
                let (_priority, _weight, port) = (d.u16()?, d.u16()?, d.u16()?);
                let target = d.name()?;
                Data::Srv { port, target }
            }
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut at = r.at;
                while at < end {
                    let n = buf[at] as usize;
                    let s = buf.get(at + 1..at + 1 + n).filter(|_| at + 1 + n <= end);
                    let s = s.ok_or("a TXT string past its record")?;
                    if !s.is_empty() {
                        strings.push(String::from_utf8_lossy(s).into_owned());
                    }
                    at += 1 + n;
                }
                Data::Txt(strings)
            }
            other => Data::Other(other),
        };
        r.at = end;
        records.push(Record { name, ttl, data });
    }
    Ok(Message {
        id,
        response: flags & FLAG_RESPONSE != 0,
        questions,
        records,
    })
}

/// A cursor over a message.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let b = self
            .buf
            .get(self.at..self.at + n)
            .ok_or("message ends early")?;
        self.at += n;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name, following compression pointers (each must point before the label it replaces,
    /// so they cannot loop); leaves the cursor after the name's own bytes.
    fn name(&mut self) -> Result<Name, Error> {
        let mut name = String::new();
        let mut at = self.at;
        // Where the cursor goes on: after the first pointer, or after the final zero.
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let len = *self.buf.get(at).ok_or("a name past the end")? as usize;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                l if l & 0xC0 == 0xC0 => {
                    let low = *self.buf.get(at + 1).ok_or("a pointer past the end")? as usize;
                    let to = (l & 0x3F) << 8 | low;
                    if to >= at {
                        return Err("a compression pointer that does not point back");
                    }
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err("too many compression pointers");
                    }
                    resume.get_or_insert(at + 2);
                    at = to;
                }
                l if l > MAX_LABEL => return Err("a label longer than 63 bytes"),
                l => {
                    let label = self
                        .buf
                        .get(at + 1..at + 1 + l)
                        .ok_or("a label past the end")?;
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(&String::from_utf8_lossy(label));
                    if name.len() > MAX_NAME {
                        return Err("a name longer than 255 bytes");
                    }
                    at += 1 + l;
                }
            }
        }
        self.at = resume.unwrap_or(at);
        Ok(name)
    }
}

/// Whether two names are the same (DNS compares ASCII letters without case).
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Builds a message; names are written whole (no compression), from their labels.
pub struct Builder {
    buf: Vec<u8>,
    /// Questions, answers, authority, additional.
    counts: [u16; 4],
}

/// A record to write: its owner's labels, TTL, and data.
pub struct Out<'a> {
    pub name: &'a [&'a str],
    pub ttl: u32,
    pub data: OutData<'a>,
    /// A unique record (its name and type belong to this host alone): the cache-flush bit.
    pub unique: bool,
}

/// The data of a record to write.
pub enum OutData<'a> {
    A(Ipv4Addr),
    Ptr(&'a [&'a str]),
    Srv { port: u16, target: &'a [&'a str] },
    Txt(&'a [&'a str]),
}

impl Builder {
    /// A query (`response` false) or an authoritative response, with id 0 as mDNS sends.
    pub fn new(response: bool) -> Builder {
        let flags = if response {
            FLAG_RESPONSE | FLAG_AUTHORITATIVE
        } else {
            0
        };
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Builder {
            buf,
            counts: [0; 4],
        }
    }

    fn name(&mut self, labels: &[&str]) {
        for l in labels {
            let l = &l.as_bytes()[..l.len().min(MAX_LABEL)];
            self.buf.push(l.len() as u8);
            self.buf.extend_from_slice(l);
        }
        self.buf.push(0);
    }

    /// Adds a question (questions come before any record).
    pub fn question(&mut self, name: &[&str], qtype: u16) {
        self.name(name);
        self.buf.extend_from_slice(&qtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.counts[0] += 1;
    }

    /// Adds an answer (`additional` false) or an additional record.
    pub fn record(&mut self, r: &Out<'_>, additional: bool) {
        self.name(r.name);
        let rtype = match r.data {
            OutData::A(_) => TYPE_A,
            OutData::Ptr(_) => TYPE_PTR,
            OutData::Srv { .. } => TYPE_SRV,
            OutData::Txt(_) => TYPE_TXT,
        };
        let class = CLASS_IN | if r.unique { CACHE_FLUSH } else { 0 };
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match r.data {
            OutData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            OutData::Ptr(to) => self.name(to),
            OutData::Srv { port, target } => {
                self.buf.extend_from_slice(&[0, 0, 0, 0]);
                self.buf.extend_from_slice(&port.to_be_bytes());
                self.name(target);
            }
            OutData::Txt(strings) => {
                for s in strings {
                    let s = &s.as_bytes()[..s.len().min(255)];
                    self.buf.push(s.len() as u8);
                    self.buf.extend_from_slice(s);
                }
            }
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        self.counts[if additional { 3 } else { 1 }] += 1;
    }

    /// An answer record.
    fn answer(&mut self, name: &[&str], ttl: u32, data: OutData<'_>, unique: bool) {
        let r = Out {
            name,
            ttl,
            data,
            unique,
        };
        self.record(&r, false);
    }

    /// An answer: a shared PTR record, `name` to `to`.
    pub fn ptr(&mut self, name: &[&str], to: &[&str], ttl: u32) {
        self.answer(name, ttl, OutData::Ptr(to), false);
    }

    /// An answer: a unique SRV record, `name` at `target` port `port`.
    pub fn srv(&mut self, name: &[&str], port: u16, target: &[&str], ttl: u32) {
        self.answer(name, ttl, OutData::Srv { port, target }, true);
    }

    /// An answer: a unique TXT record.
    pub fn txt(&mut self, name: &[&str], strings: &[&str], ttl: u32) {
        self.answer(name, ttl, OutData::Txt(strings), true);
    }

    /// An answer: a unique A record.
    pub fn a(&mut self, name: &[&str], ip: Ipv4Addr, ttl: u32) {
        self.answer(name, ttl, OutData::A(ip), true);
    }

    /// The message's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for (i, c) in self.counts.iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_built_reads_back() {
        let instance = ["pi4 at 192.168.1.21:9753", "_edgemon", "_tcp", "local"];
        let host = ["edgemon-192-168-1-21", "local"];
        let mut b = Builder::new(true);
        b.record(
            &Out {
                name: &instance[1..],
                ttl: 4500,
                data: OutData::Ptr(&instance),
                unique: false,
            },
            false,
        );
        b.record(
            &Out {
                name: &instance,
                ttl: 120,
                data: OutData::Srv {
                    port: 9753,
                    target: &host,
                },
                unique: true,
            },
            true,
        );
        b.record(
            &Out {
                name: &instance,
                ttl: 4500,
                data: OutData::Txt(&["version=0.1.0", "token=no"]),
                unique: true,
            },
            true,
        );
        b.record(
            &Out {
                name: &host,
                ttl: 120,
                data: OutData::A(Ipv4Addr::new(192, 168, 1, 21)),
                unique: true,
            },
            true,
        );
        let m = parse(&b.finish()).unwrap();
        assert!(m.response);
        assert!(m.questions.is_empty());
        let name = instance.join(".");
        assert_eq!(
            m.records,
            [
                Record {
                    name: "_edgemon._tcp.local".into(),
                    ttl: 4500,
                    data: Data::Ptr(name.clone())
                },
                Record {
                    name: name.clone(),
                    ttl: 120,
                    data: Data::Srv {
                        port: 9753,
                        target: "edgemon-192-168-1-21.local".into()
                    }
                },
                Record {
                    name,
                    ttl: 4500,
                    data: Data::Txt(vec!["version=0.1.0".into(), "token=no".into()])
                },
                Record {
                    name: "edgemon-192-168-1-21.local".into(),
                    ttl: 120,
                    data: Data::A(Ipv4Addr::new(192, 168, 1, 21))
                },
            ]
        );

        let mut q = Builder::new(false);
        q.question(&["_edgemon", "_tcp", "local"], TYPE_PTR);
        let m = parse(&q.finish()).unwrap();
        assert!(!m.response);
        assert_eq!(
            m.questions,
            [Question {
                name: "_edgemon._tcp.local".into(),
                qtype: TYPE_PTR,
                unicast: false
            }]
        );
    }

    /// A header with the given counts.
    fn header(qd: u16, an: u16) -> Vec<u8> {
        let mut b = vec![0, 0, 0x84, 0];
        b.extend_from_slice(&qd.to_be_bytes());
        b.extend_from_slice(&an.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b
    }

    #[test]
    fn compression_pointers_are_followed_backwards_only() {
        // "local" at 12, then a question for "_tcp" + pointer to "local".
        let mut b = header(2, 0);
        b.extend_from_slice(b"\x05local\x00\x00\x0c\x00\x01");
        b.extend_from_slice(b"\x04_tcp\xc0\x0c\x00\x0c\x00\x01");
        let m = parse(&b).unwrap();
        assert_eq!(m.questions[0].name, "local");
        assert_eq!(m.questions[1].name, "_tcp.local");

        // A pointer to itself, and one forward: refused, not followed.
        let mut b = header(1, 0);
        b.extend_from_slice(b"\xc0\x0c\x00\x0c\x00\x01");
        assert!(parse(&b).is_err());
        let mut b = header(1, 0);
        b.extend_from_slice(b"\xc0\x20\x00\x0c\x00\x01");
        assert!(parse(&b).is_err());
    }

    #[test]
    fn hostile_messages_are_refused_not_trusted() {
        // Counts larger than the message, or than the limits.
        assert!(parse(&header(1, 0)).is_err());
        assert!(parse(&header(0, 300)).is_err());
        assert!(parse(&header(65, 0)).is_err());
        assert!(parse(&[0; 5]).is_err());
        // A label over 63 bytes (0x40 is neither a length nor a pointer).
        let mut b = header(1, 0);
        b.push(0x40);
        b.extend_from_slice(&[b'a'; 64]);
        b.extend_from_slice(b"\x00\x00\x0c\x00\x01");
        assert!(parse(&b).is_err());
        // A name over 255 bytes: five labels of 63.
        let mut b = header(1, 0);
        for _ in 0..5 {
            b.push(63);
            b.extend_from_slice(&[b'a'; 63]);
        }
        b.extend_from_slice(b"\x00\x00\x0c\x00\x01");
        assert_eq!(parse(&b), Err("a name longer than 255 bytes"));
        // A record whose data runs past the end, and a TXT string past its record.
        let mut b = header(0, 1);
        b.extend_from_slice(b"\x00\x00\x10\x00\x01\x00\x00\x00\x78\x00\x10abc");
        assert!(parse(&b).is_err());
        let mut b = header(0, 1);
        b.extend_from_slice(b"\x00\x00\x10\x00\x01\x00\x00\x00\x78\x00\x03\x05ab");
        assert_eq!(parse(&b), Err("a TXT string past its record"));
        // Every prefix of a good message is refused or read, never a panic.
        let mut q = Builder::new(true);
        q.srv(&["x", "local"], 1, &["y", "local"], 1);
        let full = q.finish();
        for n in 0..full.len() {
            assert!(parse(&full[..n]).is_err(), "{n}");
        }
        assert!(parse(&full).is_ok());
    }

    #[test]
    fn names_compare_without_ascii_case() {
        assert!(same("_EdgeMon._TCP.local", "_edgemon._tcp.local"));
        assert!(!same("_edgemon._tcp.local", "_edgemon._udp.local"));
    }
}
