package cli

import "testing"

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{
		"68719476736": 64 << 30, "64GiB": 64 << 30, "64G": 64 << 30, "64gib": 64 << 30, "500MB": 500e6,
		"1.5TiB": 3 << 39, "10 KiB": 10240, "7B": 7, "0": 0,
	} {
		var f sizeFlag
		if err := f.Set(in); err != nil || int64(f) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, int64(f), err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1G", "12parsecs", "1e400"} {
		var f sizeFlag
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	for n, want := range map[int64]string{64 << 30: "64GiB", 1500e6: "1500MB", 12345: "12345", 3 << 39: "1536GiB"} {
		f := sizeFlag(n)
		if got := f.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", n, got, want)
		}
	}
}
