//! A tar writer that writes whatever it is told: any name, link, typeflag, magic, size field or
//! PAX record, with a correct checksum unless asked otherwise. The tar crate refuses to write
//! most of what the corpus needs.

use niso_test_support::archives::pax_record;

pub const MANIFEST: &str = "[package]\nname = \"@diff/pkg\"\nversion = \"1.0.0\"\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    Gnu,
    Ustar,
    V7,
}

/// One header block and its data.
#[derive(Clone, Debug)]
pub struct Raw {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub typeflag: u8,
    pub data: Vec<u8>,
    pub magic: Magic,
    /// The ustar prefix field (bytes 345..500), or the old-GNU fields stored there.
    pub prefix: Vec<u8>,
    /// Replaces the size field as written (default: the data's length in octal).
    pub size_field: Option<Vec<u8>>,
    pub mode: u32,
}

impl Raw {
    pub fn new(typeflag: u8, name: &[u8]) -> Raw {
        Raw {
            name: name.to_vec(),
            link: Vec::new(),
            typeflag,
            data: Vec::new(),
            magic: Magic::Gnu,
            prefix: Vec::new(),
            size_field: None,
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
        }
    }

    pub fn header(&self) -> [u8; 512] {
        let mut block = [0u8; 512];
        put(&mut block[0..100], &self.name);
        put(
            &mut block[100..108],
            format!("{:07o}\0", self.mode).as_bytes(),
        );
        put(&mut block[108..116], b"0000000\0");
        put(&mut block[116..124], b"0000000\0");
        let size = self
            .size_field
            .clone()
            .unwrap_or_else(|| format!("{:011o}\0", self.data.len()).into_bytes());
        put(&mut block[124..136], &size);
        put(&mut block[136..148], b"14500000000\0");
        block[156] = self.typeflag;
        put(&mut block[157..257], &self.link);
        match self.magic {
            Magic::Gnu => put(&mut block[257..265], b"ustar  \0"),
            Magic::Ustar => put(&mut block[257..265], b"ustar\x0000"),
            Magic::V7 => {}
        }
        put(&mut block[265..297], b"root");
        put(&mut block[297..329], b"root");
        put(&mut block[345..500], &self.prefix);
        set_checksum(&mut block);
        block
    }
}

fn put(field: &mut [u8], value: &[u8]) {
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
}

pub fn set_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&byte| u32::from(byte)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[derive(Default, Clone)]
pub struct Tar {
    pub bytes: Vec<u8>,
}

impl Tar {
    /// An archive that starts with a valid manifest.
    pub fn package() -> Tar {
        let mut tar = Tar::default();
        tar.file("manifest.toml", MANIFEST.as_bytes());
        tar
    }

    pub fn raw(&mut self, raw: &Raw) -> &mut Tar {
        self.bytes.extend_from_slice(&raw.header());
        self.bytes.extend_from_slice(&raw.data);
        let padding = (512 - raw.data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, padding));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        let mut raw = Raw::new(b'0', name.as_bytes());
        raw.data = data.to_vec();
        self.raw(&raw)
    }

    pub fn dir(&mut self, name: &str) -> &mut Tar {
        self.raw(&Raw::new(b'5', name.as_bytes()))
    }

    pub fn link(&mut self, typeflag: u8, name: &str, target: &str) -> &mut Tar {
        let mut raw = Raw::new(typeflag, name.as_bytes());
        raw.link = target.as_bytes().to_vec();
        self.raw(&raw)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.link(b'2', name, target)
    }

    pub fn hard_link(&mut self, name: &str, target: &str) -> &mut Tar {
        self.link(b'1', name, target)
    }

    /// A PAX header (`x`, or `g` for a global one) with these records, in order.
    pub fn pax(&mut self, typeflag: u8, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut raw = Raw::new(typeflag, b"PaxHeaders/entry");
        raw.magic = Magic::Ustar;
        raw.data = records
            .iter()
            .flat_map(|(key, value)| pax_record(key, value))
            .collect();
        self.raw(&raw)
    }

    /// A GNU long name (`L`) or long link (`K`) for the next entry.
    pub fn long(&mut self, typeflag: u8, name: &[u8]) -> &mut Tar {
        let mut raw = Raw::new(typeflag, b"././@LongLink");
        raw.data = name.to_vec();
        raw.data.push(0);
        self.raw(&raw)
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes.extend_from_slice(&[0; 1024]);
        bytes
    }
}
