package fetch

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"sync"
)

// Redact returns u without credentials, query or fragment (presigned URLs
// carry their signature in the query, and tokens ride in the userinfo):
// what logs and markers show.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User = nil
	if p.RawQuery != "" || p.ForceQuery {
		p.RawQuery, p.ForceQuery = "REDACTED", false
	}
	p.Fragment, p.RawFragment = "", ""
	return p.String()
}

var urlInText = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`) })

// RedactText redacts every URL inside s (as Go's url.Error and others
// quote them).
func RedactText(s string) string {
	return urlInText().ReplaceAllStringFunc(s, func(u string) string {
		// Punctuation after a URL belongs to the sentence around it.
		trimmed := strings.TrimRight(u, ".,;:)]")
		return Redact(trimmed) + u[len(trimmed):]
	})
}

// RedactErr returns err with every URL in its text redacted; errors.Is and
// errors.As still see the original chain. This is the one boundary every
// error and warning of this package passes before a caller can print it.
func RedactErr(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(redacted); ok {
		return err
	}
	// The client's url.Error is ours alone: clean it at the source too,
	// for a caller that digs it out with errors.As.
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = Redact(ue.URL)
	}
	return redacted{err}
}

type redacted struct{ err error }

func (r redacted) Error() string { return RedactText(r.err.Error()) }
func (r redacted) Unwrap() error { return r.err }
