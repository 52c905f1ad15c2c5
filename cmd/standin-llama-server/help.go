package main

// helpText is llama-server's --help as a recent release prints it (a
// subset of its flags, same layout), so llamaboot's flag check reads the
// stand-in exactly as it reads a real build.
const helpText = `----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
--completion-bash                       print source-able bash completion script for llama.cpp
--verbose-prompt                        print a verbose prompt before generation (default: false)
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-tb,   --threads-batch N                number of threads to use during batch and prompt processing
                                        (default: same as --threads)
-C,    --cpu-mask M                     CPU affinity mask: arbitrarily long hex. Complements cpu-range
                                        (default: "")
--prio N                                set process/thread priority : low(-1), normal(0), medium(1),
                                        high(2), realtime(3) (default: 0)
-c,    --ctx-size N                     size of the prompt context (default: 4096, 0 = loaded from model)
                                        (env: LLAMA_ARG_CTX_SIZE)
-n,    --predict, --n-predict N         number of tokens to predict (default: -1, -1 = infinity)
                                        (env: LLAMA_ARG_N_PREDICT)
-b,    --batch-size N                   logical maximum batch size (default: 2048)
                                        (env: LLAMA_ARG_BATCH)
-ub,   --ubatch-size N                  physical maximum batch size (default: 512)
                                        (env: LLAMA_ARG_UBATCH)
--keep N                                number of tokens to keep from the initial prompt (default: 0, -1
                                        = all)
--swa-full                              use full-size SWA cache (default: false)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
                                        (env: LLAMA_ARG_FLASH_ATTN)
--no-perf                               disable internal libllama performance timings (default: false)
-e,    --escape                         process escapes sequences (\n, \r, \t, \', \", \\) (default: true)
--no-escape                             do not process escape sequences
--rope-scaling {none,linear,yarn}       RoPE frequency scaling method, defaults to linear unless specified
                                        by the model
--rope-scale N                          RoPE context scaling factor, expands context by a factor of N
--rope-freq-base N                      RoPE base frequency, used by NTK-aware scaling (default: loaded
                                        from model)
--rope-freq-scale N                     RoPE frequency scaling factor, expands context by a factor of 1/N
--yarn-orig-ctx N                       YaRN: original context size of model (default: 0 = model training
                                        context size)
--yarn-ext-factor N                     YaRN: extrapolation mix factor (default: -1.0, 0.0 = full
                                        interpolation)
--yarn-attn-factor N                    YaRN: scale sqrt(t) or attention magnitude (default: -1.0)
-nkvo, --no-kv-offload                  disable KV offload
-ctk,  --cache-type-k TYPE              KV cache data type for K (default: f16)
-ctv,  --cache-type-v TYPE              KV cache data type for V (default: f16)
--mlock                                 force system to keep model in RAM rather than swapping or
                                        compressing
--mmap, --no-mmap                       whether to memory-map model (default: enabled)
--numa TYPE                             attempt optimizations that help on some NUMA systems
-dev,  --device <dev1,dev2,..>          comma-separated list of devices to use for offloading (none = don't
                                        offload)
--list-devices                          print list of available devices and exit
--override-tensor, -ot <tensor name pattern>=<buffer type>,...
                                        override tensor buffer type
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM (default: -1)
                                        (env: LLAMA_ARG_N_GPU_LAYERS)
-sm,   --split-mode {none,layer,row}    how to split the model across multiple GPUs
-ts,   --tensor-split N0,N1,N2,...      fraction of the model to offload to each GPU, comma-separated list
                                        of proportions, e.g. 3,1
-mg,   --main-gpu INDEX                 the GPU to use for the model (with split-mode = none)
-fit,  --fit [on|off]                   whether to adjust unset arguments to fit in device memory
                                        (default: 'on')
--check-tensors                         check model tensor data for invalid values (default: false)
--override-kv KEY=TYPE:VALUE,...        advanced option to override model metadata by key
--no-op-offload                         disable offloading host tensor operations to device (default:
                                        false)
--lora FNAME                            path to LoRA adapter (use comma-separated values to load multiple
                                        adapters)
--lora-scaled FNAME:SCALE,...           path to LoRA adapter with user defined scaling
--control-vector FNAME                  add a control vector
-m,    --model FNAME                    model path to load
                                        (env: LLAMA_ARG_MODEL)
-mu,   --model-url MODEL_URL            model download url (default: unused)
-hf,   -hfr, --hf-repo <user>/<model>[:quant]
                                        Hugging Face model repository
-hff,  --hf-file FILE                   Hugging Face model file
-hft,  --hf-token TOKEN                 Hugging Face access token (default: value from HF_TOKEN
                                        environment variable)
--log-disable                           Log disable
--log-file FNAME                        Log to file
--log-colors [on|off|auto]              Set colored logging ('on', 'off', or 'auto', default: 'auto')
-v,    --verbose, --log-verbose         Set verbosity level to infinity (i.e. log all messages, useful for
                                        debugging)
-lv,   --verbosity, --log-verbosity N   Set the verbosity threshold
--log-prefix                            Enable prefix in log messages
--log-timestamps                        Enable timestamps in log messages


----- sampling params -----

--samplers SAMPLERS                     samplers that will be used for generation in the order, separated
                                        by ';'
-s,    --seed SEED                      RNG seed (default: -1, use random seed for -1)
--temp N                                temperature (default: 0.8)
--top-k N                               top-k sampling (default: 40, 0 = disabled)
--top-p N                               top-p sampling (default: 0.9, 1.0 = disabled)
--min-p N                               min-p sampling (default: 0.1, 0.0 = disabled)
--typical N                             locally typical sampling, parameter p (default: 1.0, 1.0 =
                                        disabled)
--repeat-last-n N                       last n tokens to consider for penalize (default: 64)
--repeat-penalty N                      penalize repeat sequence of tokens (default: 1.0, 1.0 = disabled)
--presence-penalty N                    repeat alpha presence penalty (default: 0.0, 0.0 = disabled)
--frequency-penalty N                   repeat alpha frequency penalty (default: 0.0, 0.0 = disabled)
--grammar GRAMMAR                       BNF-like grammar to constrain generations
--json-schema SCHEMA                    JSON schema to constrain generations
-bs,   --backend-sampling               enable backend sampling (default: disabled)


----- example-specific params -----

--ctx-checkpoints, --swa-checkpoints N  max number of context checkpoints to create per slot
--cache-ram, -cram N                    set the maximum cache size in MiB (default: 8192)
--no-context-shift                      disables context shift on infinite text generation
--context-shift                         enables context shift on infinite text generation
-sp,   --special                        special tokens output enabled (default: false)
--no-warmup                             skip warming up the model with an empty run
--spm-infill                            use Suffix/Prefix/Middle pattern for infill
--pooling {none,mean,cls,last,rank}     pooling type for embeddings, use model default if unspecified
-cb,   --cont-batching                  enable continuous batching (a.k.a dynamic batching) (default:
                                        enabled)
-nocb, --no-cont-batching               disable continuous batching
--mmproj FILE                           path to a multimodal projector file
--no-mmproj                             explicitly disable multimodal projector
-a,    --alias STRING                   set alias for model name (to be used by REST API)
--host HOST                             ip address to listen, or bind to an UNIX socket if the address ends
                                        with .sock (default: 127.0.0.1)
--port PORT                             port to listen (default: 8080)
--path PATH                             path to serve static files from (default: )
--api-prefix PREFIX                     prefix path the server serves from, without the trailing slash
--webui, --no-webui                     whether to enable the Web UI (default: enabled)
--embedding, --embeddings               restrict to only support embedding use case; use only with
                                        dedicated embedding models (default: disabled)
--reranking, --rerank                   enable reranking endpoint on server (default: disabled)
--api-key KEY                           API key to use for authentication (default: none)
--api-key-file FNAME                    path to file containing API keys (default: none)
--models-dir PATH                       directory containing models for the router server (default: disabled)
--models-max N                          for router server, maximum number of models to load simultaneously
                                        (default: 4, 0 = unlimited)
--ssl-key-file FNAME                    path to file a PEM-encoded SSL private key
--ssl-cert-file FNAME                   path to file a PEM-encoded SSL certificate
--chat-template-kwargs STRING           sets additional params for the json template parser
-to,   --timeout N                      server read/write timeout in seconds (default: 600)
--threads-http N                        number of threads used to process HTTP requests (default: -1)
--cache-reuse N                         min chunk size to attempt reusing from the cache via KV shifting
--metrics                               enable prometheus compatible metrics endpoint (default: disabled)
--props                                 enable changing global properties via POST /props (default:
                                        disabled)
--slots, --no-slots                     expose slots monitoring endpoint (default: enabled)
--slot-save-path PATH                   path to save slot kv cache (default: disabled)
--jinja, --no-jinja                     whether to use jinja template engine for chat (default: enabled)
--reasoning-format FORMAT               controls whether thought tags are allowed and/or extracted from the
                                        response
--reasoning-budget N                    controls the amount of thinking allowed; currently only one of: -1
                                        for unrestricted thinking budget, or 0 to disable thinking
                                        (default: -1)
--chat-template JINJA_TEMPLATE          set custom jinja chat template (default: template taken from
                                        model's metadata)
--chat-template-file JINJA_TEMPLATE_FILE
                                        set custom jinja chat template file
-np,   --parallel N                     number of server slots (default: -1, -1 = auto)
-sps,  --slot-prompt-similarity SIMILARITY
                                        how much the prompt of a request must match the prompt of a slot in
                                        order to use that slot (default: 0.10, 0.0 = disabled)
--lora-init-without-apply               load LoRA adapters without applying them
-md,   --model-draft FNAME              draft model for speculative decoding (default: unused)
-ngld, --gpu-layers-draft, --n-gpu-layers-draft N
                                        number of layers to store in VRAM for the draft model
--draft-max, --draft, --draft-n N       number of tokens to draft for speculative decoding (default: 16)
--draft-min, --draft-n-min N            minimum number of draft tokens to use for speculative decoding
                                        (default: 0)
`
