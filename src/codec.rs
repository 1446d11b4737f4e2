//! The byte codec of the history snapshot: little-endian numbers and length-prefixed strings,
//! and a reader that bounds every length and count it is asked for. Its own module, so the
//! history's tiers (which write themselves) and the snapshot file (which frames them) both use it
//! without importing each other.

/// Appends values in the snapshot's byte order (little-endian).
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads what `Writer` wrote; every read says "truncated" past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Why a snapshot was not used.
pub type Bad = String;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| "truncated".to_string())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, Bad> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn f32(&mut self) -> Result<f32, Bad> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn f64(&mut self) -> Result<f64, Bad> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<String, Bad> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("a string of {n} bytes (at most {max})"));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }
    pub fn opt_u64(&mut self) -> Result<Option<u64>, Bad> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            b => Err(format!("a flag byte of {b}")),
        }
    }
    /// A count of at most `max` items.
    pub fn count(&mut self, max: usize, what: &str) -> Result<usize, Bad> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("{n} {what} (at most {max})"));
        }
        Ok(n)
    }
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}
