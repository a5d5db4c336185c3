//! The instrument registry: who exists, and where each lives in the dense
//! slot space that every per-instrument array is indexed by.
//!
//! Token → slot is a two-level direct index (no hashing): the fast path of
//! every token subscribe and every feed record. Symbol, `EXCHANGE:SYMBOL`
//! and ISIN → slot go through one hash map; only that path touches strings.
//! The registry is built once at start and shared read-only (`Arc`).

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustc_hash::FxHashMap;

/// Dense index of an instrument in the registry, `0..len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u32);

impl From<Slot> for usize {
    fn from(s: Slot) -> usize {
        s.0 as usize
    }
}

impl Slot {
    /// The slot as an array index.
    #[inline]
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

/// One tradable (or index) instrument from the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    /// Exchange token (the integer clients subscribe by).
    pub token: u32,
    /// Kite instrument token (`exchange_token × 256 + segment`; the token
    /// itself in a Kite master), 0 when Kite has no segment for it.
    pub kite_token: u32,
    /// Exchange code, upper case (`NSE`).
    pub exchange: Box<str>,
    /// Trading symbol, upper case (`RELIANCE`).
    pub symbol: Box<str>,
    /// Long name.
    pub name: Box<str>,
    /// ISIN, empty for indices.
    pub isin: Box<str>,
    /// Minimum price step, minor units.
    pub tick_size: i64,
    /// Contract lot size.
    pub lot_size: u32,
    /// Price scale: `price = raw / 10^price_decimals`.
    pub price_decimals: u8,
    /// A plausible starting price for the simulator, minor units (0: unknown).
    pub ref_price: i64,
}

/// Rows per token page: 4096 × 4 bytes = 16 KiB, one page per 4096 tokens used.
const PAGE_BITS: u32 = 12;
const PAGE_LEN: usize = 1 << PAGE_BITS;
const NO_SLOT: u32 = u32::MAX;

/// Two-level direct index token → slot. Lookup is two dependent loads.
#[derive(Default)]
struct TokenIndex {
    /// Page number + 1 for each `token >> PAGE_BITS`; 0 means no page.
    top: Vec<u32>,
    /// Pages of slots; `NO_SLOT` where the token is unknown.
    pages: Vec<Box<[u32; PAGE_LEN]>>,
}

impl TokenIndex {
    fn insert(&mut self, token: u32, slot: u32) {
        let hi = (token >> PAGE_BITS) as usize;
        if self.top.len() <= hi {
            self.top.resize(hi + 1, 0);
        }
        if self.top[hi] == 0 {
            self.pages.push(Box::new([NO_SLOT; PAGE_LEN]));
            self.top[hi] = self.pages.len() as u32;
        }
        let page = self.top[hi] as usize - 1;
        self.pages[page][token as usize & (PAGE_LEN - 1)] = slot;
    }

    #[inline]
    fn get(&self, token: u32) -> Option<u32> {
        let page = *self.top.get((token >> PAGE_BITS) as usize)?;
        if page == 0 {
            return None;
        }
        let slot = self.pages[page as usize - 1][token as usize & (PAGE_LEN - 1)];
        (slot != NO_SLOT).then_some(slot)
    }
}

/// All instruments, with O(1) token and symbol lookup.
pub struct Registry {
    instruments: Vec<Instrument>,
    by_token: TokenIndex,
    /// Kite instrument token → slot (`/kite` clients, the `kite://` source).
    by_kite: TokenIndex,
    /// `EXCHANGE:SYMBOL` and ISIN (upper case) → slot.
    by_key: FxHashMap<Box<str>, u32>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("len", &self.instruments.len()).finish()
    }
}

/// The master bundled into the binary (`data/instruments.csv`).
pub const BUNDLED_MASTER: &str = include_str!("../data/instruments.csv");

/// Exchange assumed when a symbol comes without one.
pub const DEFAULT_EXCHANGE: &str = "NSE";

impl Registry {
    /// Build from instruments; later duplicates of a token or key are rejected.
    ///
    /// # Errors
    /// A duplicate token, or no instruments at all.
    pub fn new(instruments: Vec<Instrument>) -> Result<Registry> {
        if instruments.is_empty() {
            bail!("the instrument master has no instruments");
        }
        if instruments.len() >= NO_SLOT as usize {
            bail!("too many instruments ({})", instruments.len());
        }
        let mut by_token = TokenIndex::default();
        let mut by_kite = TokenIndex::default();
        let mut by_key = FxHashMap::default();
        for (slot, ins) in instruments.iter().enumerate() {
            let slot = slot as u32;
            if by_token.get(ins.token).is_some() {
                bail!("duplicate token {} ({}:{})", ins.token, ins.exchange, ins.symbol);
            }
            by_token.insert(ins.token, slot);
            if ins.kite_token != 0 && by_kite.get(ins.kite_token).is_none() {
                by_kite.insert(ins.kite_token, slot);
            }
            by_key.entry(format!("{}:{}", ins.exchange, ins.symbol).into_boxed_str()).or_insert(slot);
            if !ins.isin.is_empty() {
                by_key.entry(ins.isin.clone()).or_insert(slot);
            }
        }
        Ok(Registry { instruments, by_token, by_kite, by_key })
    }

    /// The bundled NIFTY 50 + indices master.
    pub fn bundled() -> Registry {
        Registry::new(parse_master(BUNDLED_MASTER.as_bytes()).expect("bundled master parses"))
            .expect("bundled master is valid")
    }

    /// Load a master file: the native layout or a Kite `instruments.csv` dump.
    ///
    /// # Errors
    /// Unreadable file, unknown header, or a malformed row (with its line).
    pub fn load(path: &Path) -> Result<Registry> {
        let bytes = std::fs::read(path).with_context(|| format!("reading instrument master {}", path.display()))?;
        let list = parse_master(&bytes).with_context(|| format!("parsing instrument master {}", path.display()))?;
        Registry::new(list).with_context(|| format!("instrument master {}", path.display()))
    }

    /// Number of instruments (= number of slots).
    #[inline]
    pub fn len(&self) -> usize {
        self.instruments.len()
    }

    /// Never true: a registry always has instruments.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.instruments.is_empty()
    }

    /// Token → slot: two array loads, no hashing.
    #[inline]
    pub fn slot_of_token(&self, token: u32) -> Option<Slot> {
        self.by_token.get(token).map(Slot)
    }

    /// Kite instrument token → slot: two array loads, no hashing.
    #[inline]
    pub fn slot_of_kite_token(&self, kite_token: u32) -> Option<Slot> {
        self.by_kite.get(kite_token).map(Slot)
    }

    /// `NSE:RELIANCE`, `RELIANCE` (exchange defaults to NSE) or an ISIN →
    /// slot, case-insensitive. One hash lookup; no allocation for keys up to
    /// 64 bytes.
    pub fn slot_of_symbol(&self, key: &str) -> Option<Slot> {
        let mut buf = [0u8; 64];
        let (exch, sym) = match key.split_once(':') {
            Some((e, s)) => (e, s),
            None => {
                if let Some(slot) = self.lookup_upper(key, &mut buf) {
                    return Some(slot); // an ISIN
                }
                (DEFAULT_EXCHANGE, key)
            }
        };
        let len = exch.len() + 1 + sym.len();
        if len > buf.len() {
            return None;
        }
        buf[..exch.len()].copy_from_slice(exch.as_bytes());
        buf[exch.len()] = b':';
        buf[exch.len() + 1..len].copy_from_slice(sym.as_bytes());
        buf[..len].make_ascii_uppercase();
        let k = std::str::from_utf8(&buf[..len]).ok()?;
        self.by_key.get(k).map(|&s| Slot(s))
    }

    fn lookup_upper(&self, key: &str, buf: &mut [u8; 64]) -> Option<Slot> {
        if key.len() != 12 {
            return None; // ISINs are 12 characters
        }
        buf[..12].copy_from_slice(key.as_bytes());
        buf[..12].make_ascii_uppercase();
        let k = std::str::from_utf8(&buf[..12]).ok()?;
        self.by_key.get(k).map(|&s| Slot(s))
    }

    /// The instrument in `slot`.
    ///
    /// # Panics
    /// If `slot` is not from this registry.
    #[inline]
    pub fn get(&self, slot: Slot) -> &Instrument {
        &self.instruments[slot.idx()]
    }

    /// Every instrument, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Instrument)> {
        self.instruments.iter().enumerate().map(|(i, ins)| (Slot(i as u32), ins))
    }
}

/// Parse a decimal string (`"0.05"`) into minor units at `decimals`.
fn parse_fixed(s: &str, decimals: u8) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac = frac.trim_end_matches('0');
    if frac.len() > usize::from(decimals) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    for i in 0..usize::from(decimals) {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(if neg { -v } else { v })
}

/// Decimals needed to express `tick_size` exactly, at least 2.
fn decimals_of(tick_size: &str) -> u8 {
    let frac = tick_size.trim().split_once('.').map_or("", |(_, f)| f.trim_end_matches('0'));
    frac.len().clamp(2, 8) as u8
}

/// Parse either master layout from CSV bytes.
///
/// # Errors
/// Unknown header or a malformed row; the message names the line.
pub fn parse_master(bytes: &[u8]) -> Result<Vec<Instrument>> {
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(bytes);
    let headers = rdr.headers().context("reading the header line")?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let kite = col("instrument_token").is_some() && col("tradingsymbol").is_some();
    let need = |name: &str| col(name).with_context(|| format!("missing column `{name}`"));
    let (c_token, c_symbol) = if kite {
        (need("instrument_token")?, need("tradingsymbol")?)
    } else if col("token").is_some() {
        (need("token")?, need("symbol")?)
    } else {
        bail!("unknown master layout: expected a `token,exchange,symbol,…` header or a Kite dump (`instrument_token,exchange_token,tradingsymbol,…`)");
    };
    let c_exchange = need("exchange")?;
    let (c_name, c_isin, c_tick, c_lot) = (col("name"), col("isin"), col("tick_size"), col("lot_size"));
    let (c_dec, c_ref) = (col("price_decimals"), col("ref_price").or_else(|| col("last_price")));
    let c_segment = col("segment");

    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("line {line}"))?;
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("");
        let token: u32 = field(Some(c_token))
            .parse()
            .with_context(|| format!("line {line}: token `{}` is not an unsigned integer", field(Some(c_token))))?;
        let tick_str = match field(c_tick) {
            "" => "0.05",
            t => t,
        };
        let price_decimals = match field(c_dec) {
            "" => decimals_of(tick_str),
            d => d
                .parse()
                .ok()
                .filter(|&d: &u8| d <= 8)
                .with_context(|| format!("line {line}: bad price_decimals `{d}`"))?,
        };
        let tick_size = parse_fixed(tick_str, price_decimals)
            .filter(|&t| t >= 0)
            .with_context(|| format!("line {line}: bad tick_size `{tick_str}`"))?;
        let lot_size = match field(c_lot) {
            "" => 1,
            l => l.parse().with_context(|| format!("line {line}: bad lot_size `{l}`"))?,
        };
        let ref_price = match field(c_ref) {
            "" => 0,
            p => parse_fixed(p, price_decimals).unwrap_or(0),
        };
        let symbol = field(Some(c_symbol)).to_ascii_uppercase();
        if symbol.is_empty() {
            bail!("line {line}: empty symbol");
        }
        let exchange = field(Some(c_exchange)).to_ascii_uppercase();
        let isin = field(c_isin).to_ascii_uppercase();
        // A Kite dump's tokens are Kite tokens. In the native layout the
        // Kite segment comes from an optional `segment` column (Kite's
        // names: `INDICES`, `NSE`, `NFO-OPT`, …) or else the exchange, an
        // NSE or BSE row without an ISIN being an index.
        let kite_token = if kite {
            token
        } else {
            let segment = field(c_segment).to_ascii_uppercase();
            let (market, index) = match segment.as_str() {
                "" => (exchange.as_str(), isin.is_empty() && matches!(exchange.as_str(), "NSE" | "BSE")),
                "INDICES" => (exchange.as_str(), true),
                s => (s.split('-').next().unwrap_or(s), false),
            };
            crate::kite::segment_for(market, index).and_then(|seg| crate::kite::token(token, seg)).unwrap_or(0)
        };
        out.push(Instrument {
            token,
            kite_token,
            exchange: exchange.into(),
            symbol: symbol.into(),
            name: field(c_name).into(),
            isin: isin.into(),
            tick_size: tick_size.max(1),
            lot_size,
            price_decimals,
            ref_price,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_master_has_nifty_names_with_real_tokens() {
        let reg = Registry::bundled();
        assert!(reg.len() >= 54, "NIFTY 50 plus indices, got {}", reg.len());
        for (token, sym, isin) in
            [(2885, "RELIANCE", "INE002A01018"), (11536, "TCS", "INE467B01029"), (1594, "INFY", "INE009A01021")]
        {
            let slot = reg.slot_of_token(token).expect("token present");
            let ins = reg.get(slot);
            assert_eq!((&*ins.symbol, &*ins.isin, &*ins.exchange), (sym, isin, "NSE"));
            assert_eq!(reg.slot_of_symbol(sym), Some(slot));
            assert_eq!(reg.slot_of_symbol(&format!("nse:{}", sym.to_lowercase())), Some(slot));
            assert_eq!(reg.slot_of_symbol(isin), Some(slot));
        }
    }

    #[test]
    fn unknown_lookups_miss() {
        let reg = Registry::bundled();
        assert_eq!(reg.slot_of_token(99_999_999), None);
        assert_eq!(reg.slot_of_token(0), None);
        assert_eq!(reg.slot_of_symbol("NOPE"), None);
        assert_eq!(reg.slot_of_symbol("BSE:RELIANCE"), None);
        assert_eq!(reg.slot_of_symbol(&"X".repeat(200)), None);
    }

    #[test]
    fn kite_dump_is_accepted() {
        let csv = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n\
                   738561,2885,RELIANCE,\"RELIANCE INDUSTRIES, LTD\",0,,0,0.05,1,EQ,NSE,NSE\n\
                   268041,1047,USDINR24DECFUT,USDINR,0,2024-12-27,0,0.0025,1,FUT,CDS-FUT,CDS\n";
        let reg = Registry::new(parse_master(csv.as_bytes()).unwrap()).unwrap();
        let rel = reg.get(reg.slot_of_token(738561).unwrap());
        assert_eq!((&*rel.symbol, rel.tick_size, rel.price_decimals), ("RELIANCE", 5, 2));
        assert_eq!(&*rel.name, "RELIANCE INDUSTRIES, LTD");
        let fut = reg.get(reg.slot_of_symbol("CDS:USDINR24DECFUT").unwrap());
        assert_eq!((fut.tick_size, fut.price_decimals), (25, 4));
        assert_eq!(reg.slot_of_kite_token(738561), reg.slot_of_token(738561), "a Kite dump's tokens are Kite tokens");
    }

    #[test]
    fn kite_tokens_of_the_native_master() {
        let reg = Registry::bundled();
        let rel = reg.slot_of_symbol("RELIANCE").unwrap();
        assert_eq!(reg.get(rel).kite_token, 738561);
        assert_eq!(reg.slot_of_kite_token(738561), Some(rel));
        let nifty = reg.slot_of_symbol("NIFTY").unwrap();
        assert_eq!(reg.get(nifty).kite_token, 26000 * 256 + 9, "an index: segment 9");
        assert_eq!(reg.slot_of_kite_token(2885), None);
        let csv = "token,exchange,symbol\n7,NYSE,IBM\n16777216,NSE,BIG\n";
        let odd = Registry::new(parse_master(csv.as_bytes()).unwrap()).unwrap();
        assert!(odd.iter().all(|(_, i)| i.kite_token == 0), "no segment, or past 32 bits: no Kite token");
        // A `segment` column says it outright: an equity without an ISIN,
        // an index, a derivative.
        let csv =
            "token,exchange,symbol,segment\n5,NSE,NOISIN,NSE\n6,NSE,IDX,INDICES\n7,NFO,FUT,NFO-FUT\n8,NSE,PLAIN,\n";
        let reg = Registry::new(parse_master(csv.as_bytes()).unwrap()).unwrap();
        let kt: Vec<u32> = reg.iter().map(|(_, i)| i.kite_token).collect();
        assert_eq!(kt, [5 * 256 + 1, 6 * 256 + 9, 7 * 256 + 2, 8 * 256 + 9]);
    }

    #[test]
    fn bad_masters_say_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            ("unknown header", "a,b\n1,2\n", "unknown master layout"),
            ("bad token", "token,exchange,symbol\nabc,NSE,X\n", "line 2: token `abc`"),
            ("duplicate", "token,exchange,symbol\n1,NSE,X\n1,NSE,Y\n", "duplicate token 1"),
            ("empty", "token,exchange,symbol\n", "no instruments"),
        ];
        for (label, csv, want) in cases {
            let err = parse_master(csv.as_bytes()).and_then(Registry::new).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{label}: {err:#}");
        }
    }

    #[test]
    fn sparse_large_tokens_index_directly() {
        let mk = |token, sym: &str| Instrument {
            token,
            kite_token: 0,
            exchange: "NSE".into(),
            symbol: sym.into(),
            name: "".into(),
            isin: "".into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: 2,
            ref_price: 0,
        };
        let reg = Registry::new(vec![mk(7, "A"), mk(u32::MAX - 1, "B"), mk(300_000_000, "C")]).unwrap();
        assert_eq!(reg.slot_of_token(u32::MAX - 1), Some(Slot(1)));
        assert_eq!(reg.slot_of_token(300_000_000), Some(Slot(2)));
        assert_eq!(reg.slot_of_token(300_000_001), None);
    }

    #[test]
    fn fixed_point_parses_exactly() {
        assert_eq!(parse_fixed("0.05", 2), Some(5));
        assert_eq!(parse_fixed("1285.50", 2), Some(128550));
        assert_eq!(parse_fixed("0.0025", 4), Some(25));
        assert_eq!(parse_fixed("0.001", 2), None);
        assert_eq!(parse_fixed("x", 2), None);
    }
}
