//! Line bookkeeping for matches: a cursor that only moves forward, so placing the sorted matches of
//! an input costs one pass over it (block mode) or over the held-back bytes (stream mode).

#[derive(Clone, Debug, Default)]
pub struct LineCursor {
    /// Absolute offset the cursor stands at.
    pub pos: u64,
    /// 1-based line number at `pos`.
    pub line: u64,
    /// Absolute offset of the first byte of the line containing `pos`.
    pub line_start: u64,
}

impl LineCursor {
    pub fn new() -> LineCursor {
        LineCursor {
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// Moves forward to absolute offset `to`; `hay` holds the bytes from absolute offset `base`
    /// and must cover `[self.pos, to)`.
    pub fn advance(&mut self, hay: &[u8], base: u64, to: u64) {
        if to <= self.pos {
            return;
        }
        let bytes = &hay[(self.pos - base) as usize..(to - base) as usize];
        let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
        if n > 0 {
            self.line += n;
            let last = memchr::memrchr(b'\n', bytes).expect("a newline was counted");
            self.line_start = self.pos + last as u64 + 1;
        }
        self.pos = to;
    }

    /// 1-based byte column of `self.pos`.
    pub fn column(&self) -> u64 {
        self.pos - self.line_start + 1
    }
}

#[cfg(test)]
mod tests {
    use super::LineCursor;

    #[test]
    fn counts_lines_and_columns() {
        let hay = b"ab\ncd\n\nefg";
        let mut c = LineCursor::new();
        c.advance(hay, 0, 1);
        assert_eq!((c.line, c.column()), (1, 2));
        c.advance(hay, 0, 4);
        assert_eq!((c.line, c.column()), (2, 2));
        c.advance(hay, 0, 9);
        assert_eq!((c.line, c.column()), (4, 3));
        // Stream use: the buffer starts later, the cursor continues.
        let mut d = LineCursor::new();
        d.advance(hay, 0, 3);
        d.advance(&hay[3..], 3, 9);
        assert_eq!((d.line, d.column()), (4, 3));
    }
}
