//! A restricted unpickler for `torch.save` state dicts (`.pth`, the zip format of PyTorch
//! ≥ 1.6).
//!
//! # Why hand-written
//!
//! A pickle is a program for a small stack machine whose `GLOBAL` + `REDUCE` opcodes call any
//! importable function: loading an untrusted `.pth` with Python's `pickle` (or
//! `torch.load(weights_only=False)`) runs whatever the file says. The Rust crates we checked
//! do not fit: `serde-pickle` has no persistent ids (`BINPERSID`, which is how every tensor
//! refers to its storage) and maps globals to generic values rather than refusing them, and
//! `candle`'s reader is part of a whole framework. So this module implements only the opcodes
//! `torch.save` emits and rebuilds only the values a state dict is made of: tensors
//! (`torch._utils._rebuild_tensor_v2` over a storage persistent id), `collections.OrderedDict`,
//! dicts, lists, tuples, strings, numbers, booleans and `None`. Any other global (`os.system`,
//! `builtins.eval`, a model class, …) is refused with an error naming it, at the `GLOBAL`
//! opcode, before anything could use it; nothing is ever called or executed.
//!
//! # Bounds
//!
//! Values live in an arena and containers refer to them by index, so a `BINGET` of a big
//! container costs one index (no exponential copying). The stack, the mark stack, the memo
//! and the arena have fixed limits; strings and lengths are checked against the bytes left.
//! A storage's declared size must equal its zip entry's size, and a tensor's shape, strides
//! and offset must stay inside its storage, so a hostile header can neither read out of
//! bounds nor make us allocate more than the file holds.

use std::collections::HashMap;

/// Element type of a storage, from the storage class (`torch.FloatStorage`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Element `i` of little-endian `bytes` as `f32` (`bytes` holds at least `i + 1`).
    pub fn read(self, bytes: &[u8], i: usize) -> f32 {
        let n = self.size();
        let b = &bytes[i * n..(i + 1) * n];
        let arr = |k: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..k].copy_from_slice(&b[..k]);
            a
        };
        match self {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::F64 => f64::from_le_bytes(arr(8)) as f32,
            DType::I64 => i64::from_le_bytes(arr(8)) as f32,
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            DType::I8 => f32::from(b[0] as i8),
            DType::U8 => f32::from(b[0]),
            DType::Bool => f32::from(u8::from(b[0] != 0)),
        }
    }
}

/// The globals a state dict may name; everything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(DType),
}

fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch", s) => DType::from_storage(s).map(Global::Storage),
        _ => None,
    }
}

/// A tensor as the pickle describes it: a view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub dtype: DType,
    /// The storage's key: its zip entry is `<prefix>/data/<key>`.
    pub key: String,
    /// Elements in the storage, as declared.
    pub numel: u64,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// An object of the arena.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    Storage {
        dtype: DType,
        key: String,
        numel: u64,
    },
    Tensor(TensorRef),
}

/// What the pickle built: the arena and the index of the returned object.
#[derive(Debug)]
pub struct Pickled {
    pub objs: Vec<Obj>,
    pub root: usize,
}

impl Pickled {
    pub fn get(&self, i: usize) -> &Obj {
        &self.objs[i]
    }
}

const MAX_OBJECTS: usize = 1 << 22;
const MAX_STACK: usize = 1 << 20;
const MAX_MARKS: usize = 1 << 10;
const MAX_MEMO: usize = 1 << 20;
const MAX_DIMS: usize = 8;

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

type R<T> = Result<T, String>;

/// Runs the restricted unpickler over `b`.
pub fn unpickle(b: &[u8]) -> R<Pickled> {
    let mut m = Machine {
        b,
        pos: 0,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = m.run()?;
    Ok(Pickled { objs: m.objs, root })
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("the pickle ends inside an operand at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> R<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&c| c == b'\n')
            .ok_or("a GLOBAL name is not terminated by a newline within 256 bytes")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: u64) -> R<String> {
        let n = usize::try_from(n).map_err(|_| "a string length overflows")?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "a string is not valid UTF-8".into())
    }

    fn alloc(&mut self, o: Obj) -> R<usize> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(format!("the pickle builds more than {MAX_OBJECTS} objects"));
        }
        self.objs.push(o);
        Ok(self.objs.len() - 1)
    }
    fn push_id(&mut self, id: usize) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("the pickle stack grows beyond {MAX_STACK} entries"));
        }
        self.stack.push(id);
        Ok(())
    }
    fn push(&mut self, o: Obj) -> R<()> {
        let id = self.alloc(o)?;
        self.push_id(id)
    }
    fn pop(&mut self) -> R<usize> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!(
                "the pickle pops an empty stack at byte {}",
                self.pos
            ));
        }
        self.stack.pop().ok_or_else(|| "empty stack".to_string())
    }
    fn top(&self) -> R<usize> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!(
                "the pickle reads an empty stack at byte {}",
                self.pos
            ));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "empty stack".to_string())
    }
    fn pop_mark(&mut self) -> R<Vec<usize>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("the pickle has no MARK to pop at byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, k: u32) -> R<()> {
        let top = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&k) {
            return Err(format!("the pickle memo grows beyond {MAX_MEMO} entries"));
        }
        self.memo.insert(k, top);
        Ok(())
    }
    fn memo_get(&mut self, k: u32) -> R<()> {
        let id = *self
            .memo
            .get(&k)
            .ok_or_else(|| format!("the pickle reads memo entry {k}, which was never stored"))?;
        self.push_id(id)
    }
    fn tuple(&mut self, items: Vec<usize>) -> R<()> {
        self.push(Obj::Tuple(items))
    }

    fn run(&mut self) -> R<usize> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| "the pickle ends without a STOP opcode".to_string())?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if !(2..=5).contains(&p) {
                        return Err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(format!("the pickle nests more than {MAX_MARKS} MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push(Obj::Dict(Vec::new()))?,
                b']' => self.push(Obj::List(Vec::new()))?,
                b')' => self.tuple(Vec::new())?,
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'X' => {
                    let n = self.u32()?;
                    let s = self.string(u64::from(n))?;
                    self.push(Obj::Str(s))?;
                }
                0x8c => {
                    let n = self.u8()?;
                    let s = self.string(u64::from(n))?;
                    self.push(Obj::Str(s))?;
                }
                0x8d => {
                    let n = self.u64()?;
                    let s = self.string(n)?;
                    self.push(Obj::Str(s))?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(i64::from(v)))?;
                }
                b'M' => {
                    let s = self.take(2)?;
                    self.push(Obj::Int(i64::from(u16::from_le_bytes([s[0], s[1]]))))?;
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(format!(
                            "a {n}-byte integer at byte {at} does not fit in 64 bits"
                        ));
                    }
                    let s = self.take(n)?;
                    let mut a = [0u8; 8];
                    a[..n].copy_from_slice(s);
                    if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                        a[n..].fill(0xff);
                    }
                    self.push(Obj::Int(i64::from_le_bytes(a)))?;
                }
                b'G' => {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    self.push(Obj::Float(f64::from_be_bytes(a)))?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.tuple(items)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.tuple(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.extend_list(l, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.extend_list(l, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.extend_dict(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.extend_dict(d, items)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.push_id(t)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.objs[module], &self.objs[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?;
                        }
                        _ => return Err("STACK_GLOBAL of non-strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.push_id(v)?;
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict (its `_metadata`) or of a tensor
                    // carries nothing we use.
                    self.pop()?;
                    let t = self.top()?;
                    if !matches!(self.objs[t], Obj::Dict(_) | Obj::Tensor(_)) {
                        return Err(format!(
                            "BUILD at byte {at} applies a state to something other than a dict or tensor"
                        ));
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent(pid)?;
                    self.push(s)?;
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at} (not one torch.save writes for a state dict)"
                    ));
                }
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> R<()> {
        match allowed_global(module, name) {
            Some(g) => self.push(Obj::Global(g)),
            None => Err(format!(
                "the pickle references the global '{module}.{name}', which is refused: only \
                 tensors, storages and OrderedDicts are rebuilt and nothing is ever called"
            )),
        }
    }

    fn extend_list(&mut self, l: usize, items: Vec<usize>) -> R<()> {
        match &mut self.objs[l] {
            Obj::List(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err("APPEND to something that is not a list".into()),
        }
    }

    fn extend_dict(&mut self, d: usize, items: Vec<usize>) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of items".into());
        }
        match &mut self.objs[d] {
            Obj::Dict(v) => {
                v.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            _ => Err("SETITEM on something that is not a dict".into()),
        }
    }

    fn int(&self, id: usize, what: &str) -> R<u64> {
        match self.objs[id] {
            Obj::Int(v) => u64::try_from(v).map_err(|_| format!("{what} is negative ({v})")),
            _ => Err(format!("{what} is not an integer")),
        }
    }

    fn ints(&self, id: usize, what: &str) -> R<Vec<u64>> {
        match &self.objs[id] {
            Obj::Tuple(v) | Obj::List(v) => {
                if v.len() > MAX_DIMS {
                    return Err(format!("{what} has {} dimensions", v.len()));
                }
                v.iter().map(|&i| self.int(i, what)).collect()
            }
            _ => Err(format!("{what} is not a tuple")),
        }
    }

    fn reduce(&mut self, f: usize, args: usize) -> R<usize> {
        let Obj::Global(g) = self.objs[f] else {
            return Err("REDUCE calls something that is not an allowed global".into());
        };
        let Obj::Tuple(a) = &self.objs[args] else {
            return Err("REDUCE arguments are not a tuple".into());
        };
        let a = a.clone();
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return Err("OrderedDict is rebuilt only empty".into());
                }
                self.alloc(Obj::Dict(Vec::new()))
            }
            Global::RebuildTensorV2 => {
                if !(a.len() == 6 || a.len() == 7) {
                    return Err(format!("_rebuild_tensor_v2 with {} arguments", a.len()));
                }
                let Obj::Storage { dtype, key, numel } = &self.objs[a[0]] else {
                    return Err("_rebuild_tensor_v2 of something that is not a storage".into());
                };
                let (dtype, key, numel) = (*dtype, key.clone(), *numel);
                let offset = self.int(a[1], "a tensor's storage offset")?;
                let size = self.ints(a[2], "a tensor's size")?;
                let stride = self.ints(a[3], "a tensor's stride")?;
                if size.len() != stride.len() {
                    return Err(format!(
                        "a tensor has {} sizes but {} strides",
                        size.len(),
                        stride.len()
                    ));
                }
                self.alloc(Obj::Tensor(TensorRef {
                    dtype,
                    key,
                    numel,
                    offset,
                    size,
                    stride,
                }))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let want = if g == Global::RebuildParameter { 3 } else { 4 };
                if a.len() != want || !matches!(self.objs[a[0]], Obj::Tensor(_)) {
                    return Err("_rebuild_parameter of something that is not a tensor".into());
                }
                Ok(a[0])
            }
            Global::Storage(_) => Err("a storage class is called directly".into()),
        }
    }

    fn persistent(&self, pid: usize) -> R<Obj> {
        let bad = || "a persistent id is not ('storage', StorageClass, key, location, numel)";
        let Obj::Tuple(t) = &self.objs[pid] else {
            return Err(bad().into());
        };
        if t.len() != 5 {
            return Err(bad().into());
        }
        match (
            &self.objs[t[0]],
            &self.objs[t[1]],
            &self.objs[t[2]],
            &self.objs[t[3]],
        ) {
            (Obj::Str(tag), Obj::Global(Global::Storage(dtype)), Obj::Str(key), Obj::Str(_))
                if tag == "storage" =>
            {
                let numel = self.int(t[4], "a storage's size")?;
                Ok(Obj::Storage {
                    dtype: *dtype,
                    key: key.clone(),
                    numel,
                })
            }
            _ => Err(bad().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_by_name() {
        let p = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let e = unpickle(p).unwrap_err();
        assert!(e.contains("'os.system'"), "{e}");
    }

    #[test]
    fn reads_containers_and_numbers() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x05X\x01\x00\x00\x00b]q\x01(\x88N\x8a\x02\xff\x7fG?\xf0\x00\x00\x00\x00\x00\x00eu.";
        let r = unpickle(p).unwrap();
        let Obj::Dict(d) = r.get(r.root) else {
            panic!("{:?}", r.get(r.root))
        };
        assert_eq!(d.len(), 2);
        assert_eq!(r.get(d[0].1), &Obj::Int(5));
        let Obj::List(l) = r.get(d[1].1) else {
            panic!()
        };
        assert_eq!(r.get(l[2]), &Obj::Int(0x7fff));
        assert_eq!(r.get(l[3]), &Obj::Float(1.0));
    }

    #[test]
    fn negative_long1_and_errors() {
        let r = unpickle(b"\x80\x02\x8a\x01\xff.").unwrap();
        assert_eq!(r.get(r.root), &Obj::Int(-1));
        assert!(unpickle(b"\x80\x02").unwrap_err().contains("STOP"));
        assert!(unpickle(b"\x80\x02h\x07.").unwrap_err().contains("memo"));
        assert!(unpickle(b"\x80\x02.").unwrap_err().contains("empty"));
        assert!(
            unpickle(b"\x80\x02X\xff\xff\xff\xffab.")
                .unwrap_err()
                .contains("ends")
        );
        assert!(unpickle(b"\x80\x02i\n.").unwrap_err().contains("opcode"));
    }
}
