package printer

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLinesAndQuiet(t *testing.T) {
	var out, errb bytes.Buffer
	p := New(&out, &errb, "[llama-cpp-pkg]", false)
	p.Stepf("copying %s", "x.tgz")
	p.Warnf("odd")
	if out.String() != "[llama-cpp-pkg] copying x.tgz\n" || errb.String() != "[llama-cpp-pkg] WARNING: odd\n" {
		t.Errorf("out %q err %q", out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	q := New(&out, &errb, "[x]", true)
	q.Stepf("hidden")
	q.Errorf("shown")
	if out.Len() != 0 || !strings.Contains(errb.String(), "ERROR: shown") {
		t.Errorf("quiet: out %q err %q", out.String(), errb.String())
	}
}

func TestProgressLinesWhenNotATerminal(t *testing.T) {
	var out bytes.Buffer
	p := New(&out, &out, "[p]", false)
	p.ProgressEvery = time.Hour
	pr := p.Progress("extracting", 1000)
	pr.Write(make([]byte, 100))
	if out.Len() != 0 {
		t.Fatalf("a line before the interval passed: %q", out.String())
	}
	p.ProgressEvery = 0 // every write is due
	pr.Write(make([]byte, 400))
	pr.Done()
	if got := out.String(); got != "[p] extracting: 50% (500 B of 1000 B)\n" {
		t.Errorf("progress lines = %q", got)
	}
}

func TestDownloadLinesHaveRateAndTimeLeft(t *testing.T) {
	var out bytes.Buffer
	p := New(&out, &out, "[p]", false)
	p.ProgressEvery = 0
	pr := p.Download("m.gguf", 1000, 200) // 200 bytes from an earlier run
	time.Sleep(10 * time.Millisecond)     // a measurable rate
	pr.Write(make([]byte, 300))
	re := regexp.MustCompile(`^\[p\] m\.gguf: 50% \(500 B of 1000 B, [0-9.]+ (B|KiB|MiB)/s, [0-9.]+m?s left\)\n$`)
	if !re.MatchString(out.String()) {
		t.Errorf("download line = %q", out.String())
	}
	out.Reset()
	p.Download("x", 0, 0).Write(make([]byte, 2048))
	if !strings.HasPrefix(out.String(), "[p] x: 2.0 KiB so far, ") {
		t.Errorf("unknown total: %q", out.String())
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 181 << 20: "181.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
