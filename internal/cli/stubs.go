package cli

import "github.com/spf13/cobra"

func newPlanCmd(env Env) *cobra.Command              { return &cobra.Command{Use: "plan", Hidden: true} }
func newRunCmd(env Env) *cobra.Command               { return &cobra.Command{Use: "run", Hidden: true} }
func newEntryCmd(env Env) *cobra.Command             { return &cobra.Command{Use: "entry", Hidden: true} }
func newStatusCmd(env Env) *cobra.Command            { return &cobra.Command{Use: "status", Hidden: true} }
func newControlCmd(n string, env Env) *cobra.Command { return &cobra.Command{Use: n, Hidden: true} }
