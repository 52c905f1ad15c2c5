package logfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A real child process writes the output in these tests: when run with
// LOGFILE_TEST_LINES set, the test binary prints that many numbered lines
// as fast as it can and exits.
func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv("LOGFILE_TEST_LINES")); err == nil {
		w := bufio.NewWriterSize(os.Stdout, 4096)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "line %08d of the server's output\n", i)
		}
		w.Flush()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startWriter starts the child with its stdout on a pipe and returns the
// read end; the child is reaped when the test ends.
func startWriter(t *testing.T, lines int) (*os.File, *exec.Cmd) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LOGFILE_TEST_LINES="+strconv.Itoa(lines))
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r, cmd
}

// readAll reads path and its rotated files, oldest first.
func readAll(t *testing.T, path string, files int) (lines []string, present int) {
	t.Helper()
	for i := files - 1; i >= 0; i-- {
		b, err := os.ReadFile(Rotated(path, i))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		present++
		lines = append(lines, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")...)
	}
	return lines, present
}

func TestRotationKeepsEveryLine(t *testing.T) {
	const n = 200_000 // about 7 MB
	path := filepath.Join(t.TempDir(), "server.log")
	w, err := NewWriter(path, 256<<10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSink("a", w, nil)
	r, cmd := startWriter(t, n)
	s.Run(r)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	w.Close()

	lines, files := readAll(t, path, 64)
	if files < 10 {
		t.Errorf("only %d files: rotation did not happen as often as 7 MB / 256 KiB asks", files)
	}
	if s.Dropped() != 0 || w.Lost() != (Loss{}) {
		t.Errorf("dropped %d lines, lost %v", s.Dropped(), w.Lost())
	}
	if len(lines) != n {
		t.Fatalf("%d lines across %d files, want %d", len(lines), files, n)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %08d of the server's output", i); l != want {
			t.Fatalf("line %d is %q, want %q (lost, doubled or reordered across a rotation)", i, l, want)
		}
	}
	for i := 0; i < files; i++ {
		if fi, err := os.Stat(Rotated(path, i)); err == nil && fi.Size() > 256<<10 {
			t.Errorf("%s is %d bytes, over the 256 KiB bound", Rotated(path, i), fi.Size())
		}
	}
}

func TestRotationKeepsMaxFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	w, err := NewWriter(path, 4<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	if _, err := os.Stat(Rotated(path, 3)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists; log_max_files = 3 keeps the live file and two older ones", Rotated(path, 3))
	}
	lines, files := readAll(t, path, 5)
	if files != 3 || lines[len(lines)-1] != "line 1999" {
		t.Errorf("%d files, last line %q", files, lines[len(lines)-1])
	}
	tail, err := Tail(path, 700)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != 700 || string(tail[0]) != "line 1300\n" || string(tail[699]) != "line 1999\n" {
		t.Errorf("Tail across rotations: %d lines, first %q last %q", len(tail), tail[0], tail[len(tail)-1])
	}
}

func TestTailEdges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.log")
	if got, err := Tail(path, 5); err != nil || len(got) != 0 {
		t.Errorf("missing file: %q %v", got, err)
	}
	long := strings.Repeat("y", 200<<10) // a line longer than one read chunk
	os.WriteFile(path, []byte("a\n"+long+"\nb\npartial"), 0o644)
	got, err := Tail(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || string(got[0]) != long+"\n" || string(got[1]) != "b\n" || string(got[2]) != "partial" {
		t.Errorf("Tail = %d lines, %.20q %.20q", len(got), got[0], got[len(got)-1])
	}
	all, _ := Tail(path, 100)
	if len(all) != 4 || string(all[0]) != "a\n" {
		t.Errorf("Tail(100) = %d lines", len(all))
	}
}

func TestFollowersSeeLinesAfterRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	l, err := OpenLog(path, 8<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(l, "before\n")
	tail, f, err := l.Follow(5, 1<<16)
	if err != nil || len(tail) != 1 || string(tail[0]) != "before\n" {
		t.Fatalf("tail %q %v", tail, err)
	}
	s := NewSink("a", l, nil)
	r, cmd := startWriter(t, 5000) // ~180 KB: many rotations
	s.Run(r)
	cmd.Wait()
	l.Close()
	var got []string
	for line := range f.C { // closed when the log closes
		got = append(got, string(line))
	}
	if len(got) != 5000 || got[0] != "line 00000000 of the server's output\n" || got[4999] != "line 00004999 of the server's output\n" {
		t.Errorf("follower saw %d lines, first %q last %q", len(got), got[0], got[len(got)-1])
	}
	if _, err := os.Stat(Rotated(path, 1)); err != nil {
		t.Errorf("no rotation happened: %v", err)
	}
	if m := f.Missed(); m != 0 {
		t.Errorf("follower with room for every line missed %d", m)
	}
}

// A follow taken while lines are being written gets each line exactly
// once: in its tail or on its channel.
func TestFollowCutsExactly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	l, err := OpenLog(path, 4<<10, 1000)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	half, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			fmt.Fprintf(l, "%d\n", i)
			if i == n/10 {
				close(half)
			}
		}
	}()
	<-half
	tail, f, err := l.Follow(1000, n)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	f.Stop()
	var seen []string
	for _, line := range tail {
		seen = append(seen, string(line))
	}
	for line := range f.C {
		seen = append(seen, string(line))
	}
	first, _ := strconv.Atoi(strings.TrimSpace(seen[0]))
	if len(tail) != 1000 || first < n/10-1000 {
		t.Fatalf("tail of %d lines starting at %d", len(tail), first)
	}
	for j, s := range seen {
		if s != fmt.Sprintf("%d\n", first+j) {
			t.Fatalf("line %d after the cut is %q, want %d (doubled or lost at the cut)", j, s, first+j)
		}
	}
	if last := seen[len(seen)-1]; last != fmt.Sprintf("%d\n", n-1) {
		t.Fatalf("last line %q", last)
	}
}

func TestLogSetLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	l, err := OpenLog(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	l.SetLimits(64, 3)
	for i := 100; i < 110; i++ {
		fmt.Fprintf(l, "line %d\n", i)
	}
	l.Close()
	if _, err := os.Stat(Rotated(path, 2)); err != nil {
		t.Errorf("no rotation after the limits were lowered: %v", err)
	}
	if _, err := os.Stat(Rotated(path, 3)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("more files than log_max_files: %v", err)
	}
}

// blockingFile stands for a disk that stopped answering.
type blockingFile struct{ release chan struct{} }

func (b *blockingFile) Write(p []byte) (int, error) {
	<-b.release
	return len(p), nil
}

func TestStalledLogNeverBlocksTheServer(t *testing.T) {
	f := &blockingFile{release: make(chan struct{})}
	s := NewSink("a", f, nil)
	r, cmd := startWriter(t, 400_000) // ~14 MB, far past the 4 MiB queue
	ran := make(chan struct{})
	go func() { s.Run(r); close(ran) }()
	// The child can only finish if the sink keeps reading its pipe while the
	// file is stuck.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		close(f.release)
		t.Fatal("the server blocked on its output while the log file was stalled")
	}
	close(f.release)
	<-ran
	if s.Dropped() == 0 {
		t.Error("no lines counted as dropped although the file took none for 14 MB")
	}
}

func TestDroppedLinesAreSaidInTheLog(t *testing.T) {
	var buf bytes.Buffer
	s := NewSink("a", &buf, nil)
	s.maxQueue = 10
	s.dropped.Add(3)
	s.dropB.Add(42)
	r, w, _ := os.Pipe()
	go func() { w.Write([]byte("x\n")); w.Close() }()
	s.Run(r)
	if !strings.Contains(buf.String(), "3 lines (42 bytes) of a's output were dropped") || !strings.HasSuffix(buf.String(), "x\n") {
		t.Errorf("log = %q", buf.String())
	}
}

func TestStdoutCopyIsPrefixed(t *testing.T) {
	var out bytes.Buffer
	s := NewSink("gpu0", nil, Locked(&out))
	r, w, _ := os.Pipe()
	go func() { w.Write([]byte("loading model\nno newline at end")); w.Close() }()
	s.Run(r)
	if out.String() != "[gpu0] loading model\n[gpu0] no newline at end\n" {
		t.Errorf("stdout = %q", out.String())
	}
}

func TestOpenRefusesAPlantedLink(t *testing.T) {
	dir := t.TempDir()
	sentinel := filepath.Join(dir, "shadow")
	os.WriteFile(sentinel, []byte("secret\n"), 0o600)
	log := filepath.Join(dir, "llama-server-a.log")
	os.Symlink(sentinel, log)
	_, err := Open(log)
	var le *LinkError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), log) {
		t.Fatalf("want a LinkError naming %s, got %v", log, err)
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "secret\n" {
		t.Errorf("sentinel changed: %q", b)
	}
	if _, err := Open(dir); err == nil {
		t.Error("a directory was opened as a log")
	}
	// A FIFO with no reader would block a plain open forever.
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Open(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO log: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening a planted FIFO hung")
	}
}

func TestOpenMakes0644UnderUmask077(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "a.log")
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
}

// TestDiskFullIsCountedAndSaid fills a small tmpfs: what fails is counted
// in lines and bytes, no line is left cut in the file, the start and the
// end of the loss are reported, and once space is back a note on a line
// of its own says how much was lost.
func TestDiskFullIsCountedAndSaid(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs (the tests run as root): %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	w, err := NewWriter(filepath.Join(dir, "a.log"), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var reports []LossReport
	w.OnLoss(func(r LossReport) { reports = append(reports, r) })
	// Fill all but a few KB, so some lines fit and one is cut by ENOSPC.
	filler := filepath.Join(dir, "filler")
	os.WriteFile(filler, bytes.Repeat([]byte("f"), 256<<10-5000), 0o644)
	const n, lineLen = 100, 1010 // "line %03d " + 1000 z + "\n"
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "line %03d %s\n", i, strings.Repeat("z", 1000))
		if i%7 == 0 {
			w.Flush()
		}
	}
	w.Flush()
	lost := w.Lost()
	if lost.Lines == 0 || lost.Bytes != lost.Lines*lineLen {
		t.Fatalf("lost %v, want whole lines of %d bytes", lost, lineLen)
	}
	if len(reports) != 1 || reports[0].Resumed || !strings.Contains(reports[0].Error(), "no space left on device") {
		t.Fatalf("start of the loss reported as %v", reports)
	}
	os.Remove(filler)
	fmt.Fprintf(w, "after\n")
	w.Flush()
	w.Close()
	if len(reports) != 2 || !reports[1].Resumed || reports[1].Lines != lost.Lines || reports[1].Bytes != lost.Bytes {
		t.Errorf("end of the loss reported as %v, want %v", reports, lost)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "a.log"))
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	note := fmt.Sprintf("[llamaboot] %d lines (%d bytes) of output were lost here (write ", lost.Lines, lost.Bytes)
	var kept, notes int
	for _, l := range lines[:len(lines)-1] {
		switch {
		case strings.HasPrefix(l, note):
			notes++
		case regexp.MustCompile(`^line \d{3} z{1000}$`).MatchString(l):
			kept++
		default:
			t.Errorf("a line cut or glued: %.80q…", l)
		}
	}
	if notes != 1 || int64(kept)+lost.Lines != n || lines[len(lines)-1] != "after" {
		t.Errorf("%d notes, %d lines kept + %d lost of %d, last %q", notes, kept, lost.Lines, n, lines[len(lines)-1])
	}
}

func TestFollowFromOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	os.WriteFile(path, []byte("from an earlier run\n"), 0o644)
	l, err := OpenLog(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fmt.Fprintf(l, "one\n")
	fmt.Fprintf(l, "two\n")
	tail, f, err := l.FollowFromOpen(10)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if len(tail) != 2 || string(tail[0]) != "one\n" || string(tail[1]) != "two\n" {
		t.Errorf("tail %q: want the lines since the log was opened", tail)
	}
	fmt.Fprintf(l, "three\n")
	if got := string(<-f.C); got != "three\n" {
		t.Errorf("followed %q", got)
	}
}

// TestPlantedRotatedNames: in a shared log dir such as /tmp another user can
// plant a FIFO, a link or a dir at path.1. Tail must not block on or read
// through them, and rotation must keep its bound.
func TestPlantedRotatedNames(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "llama-server-a.log")
	os.WriteFile(path, []byte("live 1\nlive 2\n"), 0o644)
	if err := syscall.Mkfifo(Rotated(path, 1), 0o666); err != nil {
		t.Fatal(err)
	}
	done := make(chan [][]byte, 1)
	go func() { lines, _ := Tail(path, 10); done <- lines }()
	select {
	case lines := <-done:
		if len(lines) != 2 {
			t.Errorf("Tail = %q, want the live file's 2 lines", lines)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tail blocked on a FIFO planted at a rotated name")
	}

	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("root's secret\n"), 0o600)
	os.Remove(Rotated(path, 1))
	os.Symlink(secret, Rotated(path, 1))
	if lines, _ := Tail(path, 10); strings.Contains(fmt.Sprint(lines), "secret") {
		t.Errorf("Tail read through a planted link: %q", lines)
	}

	// A planted dir at path.1 is cleared so rotation goes on.
	os.Remove(Rotated(path, 1))
	os.MkdirAll(filepath.Join(Rotated(path, 1), "sub"), 0o777)
	w, err := NewWriter(path, 4<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	for i := 0; i < 2; i++ {
		fi, err := os.Lstat(Rotated(path, i))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 4<<10 {
			t.Errorf("%s: %v %v", Rotated(path, i), fi, err)
		}
	}
	if b, _ := os.ReadFile(secret); string(b) != "root's secret\n" {
		t.Errorf("secret changed: %q", b)
	}
}

// TestUnrotatableLogIsTruncated: when path.1 cannot be cleared (here a
// mount point), the live file is truncated with a note rather than growing
// past log_max_size.
func TestUnrotatableLogIsTruncated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.log")
	os.Mkdir(Rotated(path, 1), 0o755)
	if err := syscall.Mount("tmpfs", Rotated(path, 1), "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs (the tests run as root): %v", err)
	}
	defer syscall.Unmount(Rotated(path, 1), syscall.MNT_DETACH)
	w, err := NewWriter(path, 4<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	b, _ := os.ReadFile(path)
	if len(b) > 4<<10 || !strings.Contains(string(b), "could not rotate") || !strings.HasSuffix(string(b), "line 1999\n") {
		t.Errorf("%d bytes: %.120q", len(b), b)
	}
	if w.Lost() != (Loss{}) {
		t.Errorf("%v lost; a failed rotation should cost old lines, not new ones", w.Lost())
	}
}
